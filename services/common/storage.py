"""Where inline providers keep their files, from the keys Llama Stack configs use.

Resolution, first match wins:
1. an explicit path in the provider's config (``db_path`` for sqlite-vec, ``data_dir`` for faiss);
2. ``persistence: {backend, namespace}`` (Llama Stack >= 0.3): the folder of that backend's
   ``db_path`` under ``storage.backends``, then ``<api>/<namespace>``;
3. ``kvstore: {db_path, namespace}`` (Llama Stack < 0.3): the folder of ``db_path``, likewise; a
   ``kvstore: {backend, namespace}`` (Llama Stack 0.4's datasetio/eval) is read like rule 2;
4. the stack's state folder (where the registry database lives), ``<api>/<provider_id>``.
A backend without a local file (PostgreSQL) falls through to the next rule.
"""

from __future__ import annotations

import pathlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.config import StackConfig

__all__ = ["StoreRef", "PERSISTENCE_DESCRIPTION", "KVSTORE_DESCRIPTION", "data_dir", "safe_name"]

PERSISTENCE_DESCRIPTION = ("Llama Stack store reference ({backend, namespace}); its backend's db_path folder "
                           "holds this provider's files (<api>/<namespace>) unless a path is given.")
KVSTORE_DESCRIPTION = ("Llama Stack < 0.3 store config ({type, db_path, namespace}); its db_path folder holds "
                       "this provider's files unless a path is given.")


class StoreRef(BaseModel):
    """Llama Stack's ``KVStoreReference``: a named backend under ``storage.backends`` and a namespace."""

    model_config = ConfigDict(extra="forbid")
    backend: str | None = Field(default=None, description="Name of a backend under storage.backends.")
    namespace: str | None = Field(default=None, description="Namespace inside that backend.")


def safe_name(name: str) -> str:
    """A file-system-safe rendering of a provider id or namespace."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def _backend_dir(stack: StackConfig, backend: str | None) -> pathlib.Path | None:
    backends = (stack.storage or {}).get("backends") or {}
    entry = backends.get(backend) if backend else None
    if isinstance(entry, dict) and entry.get("db_path"):
        return pathlib.Path(str(entry["db_path"])).expanduser().parent
    return None


def data_dir(stack: StackConfig, provider_id: str, *, api: str, persistence: StoreRef | None = None,
             kvstore: dict[str, Any] | None = None) -> pathlib.Path:
    """The folder for a provider's files (rules 2-4 of the module docstring); not created here."""
    if persistence is not None:
        base = _backend_dir(stack, persistence.backend)
        if base is not None:
            return base / api / safe_name(persistence.namespace or provider_id)
    if kvstore and kvstore.get("backend") and not kvstore.get("db_path"):  # Llama Stack 0.4's {namespace, backend}
        base = _backend_dir(stack, str(kvstore["backend"]))
        if base is not None:
            return base / api / safe_name(str(kvstore.get("namespace") or provider_id))
    if kvstore and kvstore.get("db_path"):
        base = pathlib.Path(str(kvstore["db_path"])).expanduser().parent
        return base / api / safe_name(str(kvstore.get("namespace") or provider_id))
    return stack.registry_db_path().parent / api / safe_name(provider_id)
