"""The safety providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

_P = "services.safety.providers"

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::llama-guard": ProviderSpec(
        provider_type="inline::llama-guard", api="safety",
        config_class=f"{_P}.inline.llama_guard.config:LlamaGuardConfig",
        impl=f"{_P}.inline.llama_guard.provider:LlamaGuardProvider",
        description="Asks the shield's model (a registered LLM, through the mesh) with the Llama Guard taxonomy; "
                    "parses 'safe' / 'unsafe' + categories."),
    "inline::code-scanner": ProviderSpec(
        provider_type="inline::code-scanner", api="safety",
        config_class=f"{_P}.inline.code_scanner.config:CodeScannerConfig",
        impl=f"{_P}.inline.code_scanner.provider:CodeScannerProvider",
        description="Insecure-code detection with Meta's CodeShield (regex + semgrep rules), offline."),
}
