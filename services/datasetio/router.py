"""Which provider serves a request's dataset: resolved from the watched registry cache.

Inline rows arrive as ``Struct`` messages in the resource; they are converted to dicts once per
registry revision of the dataset (not per page) and kept for the recently used datasets.
"""

from __future__ import annotations

import collections

from google.protobuf import json_format

from services.common.errors import NotFound, Unavailable
from services.common.registry_cache import RegistryCache
from services.common.resource_index import list_hint
from services.datasetio.providers.base import DatasetIOProvider, DatasetTarget, KeptRow
from stackmesh.common.v1 import common_pb2

__all__ = ["DatasetRouter", "target_of", "token_of"]

DATASET = common_pb2.RESOURCE_TYPE_DATASET
_KEEP_TARGETS = 256  # converted resources kept (a target holds its inline rows)


def token_of(resource: common_pb2.Resource) -> str:
    """The registration's identity: its create_time (a re-registration gets a new one)."""
    created = resource.create_time
    return f"{created.seconds}.{created.nanos:09d}" if resource.HasField("create_time") else ""


def target_of(resource: common_pb2.Resource) -> DatasetTarget:
    """The domain view of a dataset resource."""
    spec = resource.dataset
    return DatasetTarget(identifier=resource.identifier, provider_id=resource.provider_id, purpose=spec.purpose,
                         uri=spec.uri, inline_rows=tuple(KeptRow(json_format.MessageToDict(row)) for row in spec.rows),
                         token=token_of(resource), revision=resource.revision)


class DatasetRouter:
    def __init__(self, providers: dict[str, DatasetIOProvider], cache: RegistryCache) -> None:
        self.providers = providers
        self.cache = cache
        self._targets: collections.OrderedDict[tuple[str, str, int], DatasetTarget] = collections.OrderedDict()

    async def route(self, dataset_id: str) -> tuple[DatasetIOProvider, DatasetTarget]:
        """(provider, dataset) for a request naming ``dataset_id``."""
        resource = await self.cache.resolve_fresh(DATASET, dataset_id)
        if resource.WhichOneof("spec") != "dataset":  # "<provider_id>/x" names no registered dataset
            raise NotFound(f"dataset '{dataset_id}' not found; {list_hint(DATASET)}, or register it with the "
                           f"registry's DatasetsService/RegisterDataset (purpose, and a file:// uri or rows)",
                           reason="RESOURCE_NOT_FOUND", metadata={"identifier": dataset_id})
        provider = self.providers.get(resource.provider_id)
        if provider is None:
            raise Unavailable(f"dataset '{dataset_id}' is served by provider '{resource.provider_id}', which this "
                              f"datasetio service does not run; check the mesh config", reason="PROVIDER_NOT_RUN",
                              metadata={"provider_id": resource.provider_id})
        key = (resource.identifier, token_of(resource), resource.revision)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = target_of(resource)
            while len(self._targets) > _KEEP_TARGETS:
                self._targets.popitem(last=False)
        else:
            self._targets.move_to_end(key)
        return provider, target
