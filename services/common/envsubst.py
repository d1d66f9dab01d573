"""``${env.X}`` substitution with exactly Llama Stack's semantics.

- ``${env.X}``            the value of X; an error naming the key path when X is unset or empty
- ``${env.X:=default}``   X when set and non-empty, else ``default`` (``${env.X:=}`` gives "")
- ``${env.X:+value}``     ``value`` when X is set and non-empty, else ""
Then, only for strings where a substitution happened: "" -> None, true/false -> bool, ints, floats;
``~`` in substituted values is expanded. A provider entry whose ``provider_id`` resolves to
None/"" or ``__disabled__`` is skipped before its config is expanded (so its ``${env.X}`` cannot fail).
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from services.common.errors import ConfigError

__all__ = ["substitute", "convert_scalar", "DISABLED"]

DISABLED = "__disabled__"
_PATTERN = re.compile(r"\$\{env\.([A-Z0-9_]+)(?::([=+])([^}]*))?\}")


def convert_scalar(value: str) -> Any:
    """Llama Stack's conversion of a substituted string to a typed value."""
    if value == "":
        return None
    lowered = value.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _substitute_string(text: str, path: str, env: Mapping[str, str]) -> Any:
    def replace(match: re.Match[str]) -> str:
        name, operator, operand = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if operator == "=":
            value = current if current else operand
        elif operator == "+":
            value = operand if current else ""
        else:
            if not current:
                raise ConfigError(path, f"environment variable {name} is not set or empty "
                                        f"(write ${{env.{name}:=default}} to give a default)")
            value = current
        return os.path.expanduser(value) if value else value

    result = _PATTERN.sub(replace, text)
    return convert_scalar(result) if result != text else result


def _provider_disabled(entry: Mapping[str, Any], path: str, env: Mapping[str, str]) -> bool:
    raw = entry.get("provider_id")
    if not isinstance(raw, str):
        return raw is None and "provider_id" in entry
    resolved = _substitute_string(raw, f"{path}.provider_id", env)
    return resolved is None or resolved == DISABLED


def substitute(value: Any, path: str = "", env: Mapping[str, str] | None = None,
               skipped: list[str] | None = None, kept_indices: dict[str, list[int]] | None = None) -> Any:
    """Return ``value`` with every ``${env...}`` replaced; disabled providers are dropped and
    their paths appended to ``skipped``. For a list that lost entries, ``kept_indices[path]``
    gets the file's index of each entry kept (so later errors can name the file's entry)."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: substitute(v, f"{path}.{k}" if path else str(k), env, skipped, kept_indices)
                for k, v in value.items()}
    if isinstance(value, list):
        out, kept = [], []
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if isinstance(item, dict) and "provider_type" in item and _provider_disabled(item, item_path, env):
                if skipped is not None:
                    skipped.append(f"{item_path} ({item.get('provider_type')})")
                continue
            kept.append(i)
            out.append(substitute(item, item_path, env, skipped, kept_indices))
        if kept_indices is not None and len(kept) != len(value):
            kept_indices[path] = kept
        return out
    if isinstance(value, str):
        return _substitute_string(value, path, env)
    return value
