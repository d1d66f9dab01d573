"""``stackmesh config check``: validate a run config and say what would start."""

from __future__ import annotations

from typing import Any

from services.common import catalog
from services.common.config import StackConfig
from services.registry.config_resources import config_resources

__all__ = ["check_report"]


def check_report(config: StackConfig) -> dict[str, Any]:
    """A machine-readable summary: processes, providers that would run, unsupported ones, skipped entries."""
    resources, skipped_resources = config_resources(config)
    runnable = {api: [f"{p.provider_id} ({p.provider_type})" for p in config.supported_providers(api)]
                for api in config.apis_to_serve()}
    return {
        "config": config.source_path,
        "name": config.name,
        "processes": ["registry", *config.apis_to_serve(), "gateway"],
        "gateway_port": config.server.port,
        "registry_db": str(config.registry_db_path()),
        "providers": runnable,
        "unsupported": [{"api": u.api, "provider_id": u.provider_id, "provider_type": u.provider_type,
                         "reason": u.reason} for u in config.unsupported],
        "apis_not_served": sorted({api for api in config.apis if api not in catalog.API_SERVICES}),
        "disabled": config.skipped,
        "resources": [f"{catalog.RESOURCE_NAMES[r.type]} '{r.identifier}'" for _, r in resources],
        "resources_skipped": skipped_resources,
    }
