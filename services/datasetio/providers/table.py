"""The datasetio providers stackmesh can run, declared as data."""

from __future__ import annotations

from services.common.catalog import ProviderSpec

__all__ = ["PROVIDERS"]

_P = "services.datasetio.providers"

PROVIDERS: dict[str, ProviderSpec] = {
    "inline::localfs": ProviderSpec(
        provider_type="inline::localfs", api="datasetio",
        config_class=f"{_P}.inline.localfs.config:LocalFSConfig",
        impl=f"{_P}.inline.localfs.provider:LocalFSProvider",
        description="Datasets from inline rows or file:// CSV, JSONL and Parquet; appended rows persisted in SQLite."),
}
