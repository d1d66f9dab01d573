"""inline::code-scanner with the real CodeShield and semgrep, offline, in this process: what it flags,
at which level, and that a scanner that cannot run is an error, never a pass."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.errors import InvalidArgument, Unavailable
from services.safety.providers.base import CallOptions, Message, ShieldTarget, ViolationLevel
from services.safety.providers.inline.code_scanner.config import CodeScannerConfig
from services.safety.providers.inline.code_scanner.provider import USER_MESSAGE, CodeScannerProvider
from services.safety.providers.inline.code_scanner.scanner import ScannerError, scan

SHIELD = ShieldTarget("code", "code-scanner", "code")
SHELL = "import subprocess\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n"
HARMLESS = "def add(a, b):\n    return a + b\n"


async def _provider(**config) -> CodeScannerProvider:
    provider = CodeScannerProvider("code-scanner", CodeScannerConfig(**config), {})
    await provider.initialize()
    return provider


async def _run(provider: CodeScannerProvider, *texts: str, role: str = "assistant"):
    return await provider.run_shield(SHIELD, [Message(role, t) for t in texts], {}, CallOptions())


async def test_shell_true_is_flagged_and_harmless_code_passes():
    provider = await _provider()
    assert await provider.health() == (True, "")
    started = time.perf_counter()
    violation = await _run(provider, SHELL)
    print(f"scan of a 4-line snippet with a semgrep finding: {time.perf_counter() - started:.2f} s")
    assert violation.level is ViolationLevel.WARN  # CodeShield's treatment for this rule: warn
    assert violation.user_message == USER_MESSAGE and violation.categories == ["CWE-78"]
    [finding] = violation.metadata["findings"]
    assert finding["rule"] == "insecure-subprocess-using-shell" and finding["analyzer"] == "semgrep"
    assert finding["line"] == 4 and finding["message_index"] == 0 and finding["severity"] == "warning"
    assert violation.metadata["treatment"] == "warn"
    started = time.perf_counter()
    assert await _run(provider, HARMLESS) is None
    print(f"scan of harmless code: {time.perf_counter() - started:.2f} s")
    assert await _run(provider, "How do I bake bread?", role="user") is None


async def test_blocking_findings_are_errors_and_blocks_carry_their_language():
    provider = await _provider()
    text = f"Use this:\n```c\nvoid f(char *s) {{ char b[8]; gets(b); }}\n```\nor this:\n```python\n{SHELL}```\n"
    violation = await _run(provider, "hello", text)
    assert violation.level is ViolationLevel.ERROR and violation.metadata["treatment"] == "block"
    assert violation.categories == ["CWE-242", "CWE-78"]
    languages = {(f["message_index"], f.get("language"), f["cwe_id"]) for f in violation.metadata["findings"]}
    assert languages == {(1, "c", "CWE-242"), (1, "python", "CWE-78")}
    # Unfenced, scanned with every language's rules: C and C++ rules both match, reported once.
    unfenced = await _run(provider, "void f(char *s) { char b[8]; gets(b); }\n")
    assert [(f["cwe_id"], f["rule"]) for f in unfenced.metadata["findings"]] == [("CWE-242", "bugprone-gets")]


async def test_code_blocks_only_skips_unfenced_text():
    provider = await _provider(code_blocks_only=True)
    assert await _run(provider, SHELL) is None
    assert (await _run(provider, f"```\n{SHELL}```")).categories == ["CWE-78"]


async def test_concurrent_scans_all_see_the_finding():
    # Scanning from several event loops at once (threads) makes uvloop refuse the semgrep spawn and
    # CodeShield call the code secure; on the service's one loop every scan must flag it.
    provider = await _provider(max_concurrent_scans=2)
    results = await asyncio.gather(*(_run(provider, SHELL) for _ in range(4)))
    assert [r.categories for r in results] == [["CWE-78"]] * 4


async def test_a_failing_scanner_is_an_error_not_a_pass(monkeypatch):
    from codeshield.insecure_code_detector import insecure_code_detector, oss

    provider = await _provider()
    monkeypatch.setattr(oss, "SEMGREP_COMMAND", ["false"])  # semgrep exits 1: CodeShield logs it, finds nothing
    with pytest.raises(ScannerError, match="CodeShield failed"):
        await scan(SHELL, "python")
    with pytest.raises(Unavailable, match="code scanner 'code-scanner' could not scan") as caught:
        await _run(provider, SHELL)
    assert caught.value.reason == "SCANNER_FAILED"

    async def broken(*args, **kwargs):
        raise RuntimeError("detector exploded")

    monkeypatch.setattr(insecure_code_detector, "analyze", broken)  # CodeShield would answer "secure"
    with pytest.raises(ScannerError, match="detector exploded"):
        await scan(HARMLESS)


async def test_a_scanner_that_finds_nothing_is_unhealthy(monkeypatch):
    from codeshield.insecure_code_detector import oss

    monkeypatch.setattr(oss, "ENABLE_SEMGREP", False)  # what a semgrep release CodeShield cannot drive looks like
    provider = await _provider()
    healthy, message = await provider.health()
    assert not healthy and "semgrep" in message
    with pytest.raises(Unavailable, match="is not working") as caught:
        await _run(provider, HARMLESS)
    assert caught.value.reason == "SCANNER_UNAVAILABLE"


async def test_params_are_refused():
    provider = await _provider()
    with pytest.raises(InvalidArgument, match="takes no params"):
        await provider.run_shield(SHIELD, [Message("user", "x")], {"strict": True}, CallOptions())
