"""The eval providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

_P = "services.eval.providers"

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::meta-reference": ProviderSpec(
        provider_type="inline::meta-reference", api="eval",
        config_class=f"{_P}.inline.meta_reference.config:MetaReferenceEvalConfig",
        impl=f"{_P}.inline.meta_reference.provider:MetaReferenceEvalProvider",
        description="Benchmarks as persisted jobs: rows from datasetio, generations from inference, scores from "
                    "scoring, all through the mesh."),
}
