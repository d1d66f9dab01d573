"""``inline::code-scanner``: insecure-code detection with Meta's CodeShield (regex and semgrep rules,
offline), over the code blocks of each message — or the whole message when it has none.

Level follows CodeShield's treatment: *block* is an ERROR violation, *warn* a WARN one. Categories
are the CWE ids found (a finding without one contributes its rule id); every finding, with the
message it came from, is in the metadata. A scanner that cannot run is UNAVAILABLE, never a pass:
``initialize`` scans a snippet CodeShield must flag, and the provider reports unhealthy (and refuses
to scan) when it is not flagged, e.g. with a semgrep release whose rules no longer match.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Sequence

from services.common.errors import InvalidArgument, Unavailable
from services.safety.providers.base import (CallOptions, Message, SafetyProvider, ShieldTarget, Violation,
                                            ViolationLevel)
from services.safety.providers.inline.code_scanner.config import CodeScannerConfig
from services.safety.providers.inline.code_scanner.scanner import (SELF_TEST_CODE, Finding, ScannerError, code_blocks,
                                                                   scan)

__all__ = ["CodeScannerProvider", "USER_MESSAGE"]

log = logging.getLogger("stackmesh.safety.code_scanner")
# What Llama Stack's code scanner shows the user.
USER_MESSAGE = "Sorry, I found security concerns in the code."


class CodeScannerProvider(SafetyProvider):
    config: CodeScannerConfig

    def __init__(self, provider_id: str, config: CodeScannerConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self._gate = asyncio.Semaphore(config.max_concurrent_scans)
        self._broken: str | None = "the code scanner has not been initialized"

    async def initialize(self) -> None:
        started = time.perf_counter()
        try:
            report = await scan(SELF_TEST_CODE, "python")
        except ScannerError as err:
            self._broken = str(err)
        else:
            self._broken = None if any(f.cwe_id == "CWE-78" for f in report.findings) else (
                "CodeShield's self-test found nothing in `subprocess.call(cmd, shell=True)`: its semgrep pass "
                "is not working (CodeShield 1.0.1 needs semgrep==1.100.0)")
        if self._broken:
            log.error("code scanner unusable provider=%s reason=%s", self.provider_id, self._broken)
        else:
            log.info("code scanner ready provider=%s self_test_seconds=%.2f", self.provider_id,
                     time.perf_counter() - started)

    async def health(self) -> tuple[bool, str]:
        return (False, self._broken) if self._broken else (True, "")

    def _pieces(self, messages: Sequence[Message]) -> list[tuple[int, str | None, str]]:
        """(message index, language, code) to scan."""
        pieces: list[tuple[int, str | None, str]] = []
        for index, message in enumerate(messages):
            text = message.text
            blocks = code_blocks(text)
            if blocks:
                pieces += [(index, language, code) for language, code in blocks]
            elif text.strip() and not self.config.code_blocks_only:
                pieces.append((index, None, text))
        return pieces

    async def _scan(self, code: str, language: str | None) -> tuple[str, tuple[Finding, ...]]:
        async with self._gate:
            try:
                report = await scan(code, language)
            except ScannerError as err:
                raise Unavailable(f"code scanner '{self.provider_id}' could not scan: {err}",
                                  reason="SCANNER_FAILED") from None
        return (report.treatment, report.findings) if report.insecure else ("ignore", ())

    async def run_shield(self, shield: ShieldTarget, messages: Sequence[Message], params: dict[str, Any],
                         options: CallOptions) -> Violation | None:
        if params:
            raise InvalidArgument(f"the code scanner takes no params; got {', '.join(sorted(params))}",
                                  reason="BAD_SHIELD_PARAMS")
        if self._broken:
            raise Unavailable(f"code scanner '{self.provider_id}' is not working: {self._broken}",
                              reason="SCANNER_UNAVAILABLE")
        pieces = self._pieces(messages)
        started = time.perf_counter()
        results = await asyncio.gather(*(self._scan(code, language) for _, language, code in pieces))
        treatments = {treatment for treatment, _ in results}
        findings: list[dict[str, Any]] = []
        for (index, language, _), (_, found) in zip(pieces, results):
            # Scanned with every language's rules, C and C++ rules report the same line twice.
            for finding in dict.fromkeys(found):
                findings.append({**finding.as_dict(), "message_index": index,
                                 **({"language": language} if language else {})})
        log.info("shield=%s pieces=%d findings=%d seconds=%.2f", shield.shield_id, len(pieces), len(findings),
                 time.perf_counter() - started)
        if not findings:
            return None
        level = ViolationLevel.ERROR if "block" in treatments else ViolationLevel.WARN
        categories = list(dict.fromkeys(f["cwe_id"] or f["rule"] for f in findings))
        return Violation(level, USER_MESSAGE, categories, {
            "findings": findings, "treatment": "block" if level is ViolationLevel.ERROR else "warn",
            "violation_type": ",".join(dict.fromkeys(f["rule"] for f in findings))})  # Llama Stack's key
