"""Meta's CodeShield, made to fail loudly, and the code blocks of a message.

``CodeShield.scan_code`` swallows its own failures: an exception inside the detector is logged and
the code comes back *secure*, and a semgrep run that fails is logged as fatal and finds nothing.
For a security check that is fail-open by accident, so every scan here runs with a collector (a
context variable, so concurrent scans do not mix) on CodeShield's loggers, and a scan during which
CodeShield logged an error raises ``ScannerError`` instead of passing the code.

CodeShield's treatment is kept, with one correction: it recommends *block* only for issues whose
severity is the enum ``Severity.ERROR``, but its semgrep pass reports severities as semgrep's raw
strings ("ERROR"), so semgrep errors would only *warn*; severities are compared case-insensitively.

Scans run on the service's event loop: CodeShield spawns semgrep with asyncio subprocesses, and
scanning from a second loop in a thread fails under uvloop ("Racing with another loop to spawn a
process") — which CodeShield then reports as secure code.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import re
from typing import Any

__all__ = ["Finding", "ScanReport", "ScannerError", "scan", "code_blocks", "language_of", "SELF_TEST_CODE"]

# Must be flagged by CodeShield's semgrep pass (CWE-78); a scanner that passes it is broken.
SELF_TEST_CODE = "import subprocess\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n"

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
_TAGS = {"py": "python", "python": "python", "python3": "python", "js": "javascript", "javascript": "javascript",
         "jsx": "javascript", "node": "javascript", "java": "java", "c": "c", "h": "c", "cpp": "cpp", "c++": "cpp",
         "cc": "cpp", "hpp": "cpp", "cs": "csharp", "csharp": "csharp", "c#": "csharp", "php": "php", "hack": "hack",
         "rs": "rust", "rust": "rust", "rb": "ruby", "ruby": "ruby", "swift": "swift", "kt": "kotlin",
         "kotlin": "kotlin", "objc": "objective_c", "objective-c": "objective_c", "m": "objective_c", "xml": "xml"}


class ScannerError(Exception):
    """The scan could not run; its result says nothing about the code."""


@dataclasses.dataclass(frozen=True)
class Finding:
    cwe_id: str
    rule: str  # CodeShield's pattern id, without semgrep's path prefix
    severity: str  # error | warning | advice
    description: str
    line: int | None
    analyzer: str  # regex | semgrep

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class ScanReport:
    insecure: bool
    treatment: str  # block | warn | ignore
    findings: tuple[Finding, ...]


_collector: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("codeshield_errors", default=None)


class _Collect(logging.Handler):
    """Adds CodeShield's error records to the list of the scan that logged them."""

    def emit(self, record: logging.LogRecord) -> None:
        errors = _collector.get()
        if errors is not None:
            errors.append(record.getMessage()[:500])


_handler = _Collect(level=logging.ERROR)
logging.getLogger("codeshield").addHandler(_handler)


def language_of(tag: str) -> str | None:
    """CodeShield's language for a code fence's tag (None: scan with every language's rules)."""
    return _TAGS.get(tag.strip().lower())


def code_blocks(text: str) -> list[tuple[str | None, str]]:
    """(language, code) of each fenced block of ``text``, in order."""
    return [(language_of(tag), body) for tag, body in _FENCE.findall(text) if body.strip()]


def _finding(issue: Any) -> Finding:
    analyzer = getattr(issue.analyzer, "value", issue.analyzer)
    return Finding(cwe_id=str(issue.cwe_id or ""), rule=str(issue.pattern_id or issue.name or "").rsplit(".", 1)[-1],
                   severity=str(getattr(issue.severity, "value", issue.severity)).lower(),
                   description=str(issue.description or ""), line=issue.line, analyzer=str(analyzer or ""))


async def scan(code: str, language: str | None = None) -> ScanReport:
    """Scan ``code`` with CodeShield (``language`` None: all languages); ScannerError when it failed."""
    try:
        from codeshield.cs import CodeShield, Treatment
        from codeshield.insecure_code_detector.languages import Language
    except Exception as err:  # noqa: BLE001 - its first import writes into site-packages and may fail
        raise ScannerError(f"CodeShield cannot be imported: {type(err).__name__}: {err}") from err
    errors: list[str] = []
    token = _collector.set(errors)
    try:
        result = await CodeShield.scan_code(code, Language(language) if language else None)
    finally:
        _collector.reset(token)
    if errors:
        raise ScannerError(f"CodeShield failed: {errors[0]}")
    findings = tuple(_finding(issue) for issue in result.issues_found or ())
    treatment = getattr(result.recommended_treatment, "value", str(result.recommended_treatment))
    if any(f.severity == "error" for f in findings):
        treatment = Treatment.BLOCK.value
    return ScanReport(insecure=bool(result.is_insecure), treatment=treatment, findings=findings)
