"""The registry's rules (DESIGN §2), independent of gRPC.

Every change goes through the ``Journal`` (memory index, revisions, group commit, watch) as a
mutation function that validates against the latest state and says what to put and delete.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, AsyncIterator, Iterable

from services.common import catalog
from services.common.config import StackConfig
from services.common.errors import AlreadyExists, ConfigError, FailedPrecondition, InvalidArgument, NotFound
from services.common.resource_index import ResourceIndex, list_hint, require_llm
from services.registry.config_resources import config_resources
from services.registry.journal import Journal
from services.registry.resource_checks import check_aggregations, check_dataset
from services.registry.specs import spec_diff
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2

__all__ = ["RegistryCore"]

log = logging.getLogger("stackmesh.registry")
T = common_pb2
Resource = common_pb2.Resource
WatchEvent = registry_pb2.WatchResourcesResponse
HEALTH_STALE_SECONDS = 30.0


# Config entries are checked in this order, so that what they refer to is checked first.
_CHECK_ORDER = [T.RESOURCE_TYPE_MODEL, T.RESOURCE_TYPE_DATASET, T.RESOURCE_TYPE_SCORING_FUNCTION,
                T.RESOURCE_TYPE_SHIELD, T.RESOURCE_TYPE_VECTOR_DB, T.RESOURCE_TYPE_BENCHMARK,
                T.RESOURCE_TYPE_TOOL_GROUP]
# References a config entry may make to what does not exist yet (discovered later).
_DEFERRABLE = {"MODEL_NOT_FOUND", "DATASET_NOT_FOUND", "SCORING_FUNCTION_NOT_FOUND"}


class RegistryCore:
    def __init__(self, config: StackConfig, store: Any) -> None:
        self.config = config
        self.store = store
        self._pending: ResourceIndex | None = None  # config entries checked so far, during reconciliation
        self.journal = Journal(store)
        self._listener: Any = None
        self._health: dict[tuple[str, str], tuple[int, str, float]] = {}

    @property
    def index(self) -> ResourceIndex:
        return self.journal.index

    @property
    def committed_revision(self) -> int:
        return self.journal.committed_revision

    # ----------------------------------------------------------------- start-up
    async def start(self) -> list[str]:
        """Load the store, follow other replicas, reconcile CONFIG resources; returns skipped entries."""
        await asyncio.to_thread(self.journal.load)
        loop = asyncio.get_running_loop()
        self._listener = self.store.listen(lambda: loop.call_soon_threadsafe(self.journal.notify_remote))
        entries, skipped = config_resources(self.config)
        try:
            await self.journal.mutate(lambda: self._reconcile(entries, skipped))
        except BaseException:
            await self.stop()  # a bad config entry: the process exits, leave no listener behind
            raise
        return skipped

    async def stop(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
            self._listener = None

    def _reconcile(self, entries: list[tuple[str, Resource]], skipped: list[str]):
        """The config file is the source of truth for CONFIG resources (and only for them)."""
        wanted: dict[tuple[int, str], Resource] = {}
        # Entries may refer to each other (a benchmark to a dataset, a judge to a model): check them
        # in dependency order, each against the registry plus the entries checked before it.
        self._pending = ResourceIndex()
        try:
            for path, resource in sorted(entries, key=lambda entry: _CHECK_ORDER.index(entry[1].type)):
                try:
                    self._complete(resource)
                except NotFound as err:
                    if err.reason not in _DEFERRABLE:
                        raise ConfigError(path, err.message) from None
                    # e.g. a judge model that its provider lists only once the inference service
                    # is up: start anyway; the service that uses the reference checks it per request.
                    log.warning("config entry %s refers to something not registered yet (%s); checked when used",
                                path, err.message)
                except (InvalidArgument, FailedPrecondition) as err:
                    raise ConfigError(path, err.message) from None
                wanted[(resource.type, resource.identifier)] = resource
                self._pending.put(resource)
        finally:
            self._pending = None
        puts, deletes = [], []
        for key, resource in wanted.items():
            current = self.index.get(*key)
            if current is None:
                puts.append(resource)
            elif current.source != T.RESOURCE_SOURCE_CONFIG:
                skipped.append(f"{catalog.RESOURCE_NAMES[key[0]]} '{key[1]}' from the config is already "
                               f"{T.ResourceSource.Name(current.source)}; the existing entry is kept")
            elif spec_diff(current, resource):
                resource.create_time.CopyFrom(current.create_time)
                puts.append(resource)
        for resource in self.index.all():
            if resource.source == T.RESOURCE_SOURCE_CONFIG and (resource.type, resource.identifier) not in wanted:
                deletes.append(resource)
        return puts, deletes, None

    # ----------------------------------------------------------------- providers
    def provider_ids(self, resource_type: int) -> list[str]:
        api = catalog.RESOURCE_API[resource_type]
        return [p.provider_id for p in self.config.providers.get(api, [])]

    def _complete(self, resource: Resource) -> None:
        """Fill defaults and check the rules every new resource must satisfy."""
        name = catalog.RESOURCE_NAMES[resource.type]
        if not resource.identifier:
            raise InvalidArgument(f"a {name} needs an id", reason="RESOURCE_ID_MISSING")
        api = catalog.RESOURCE_API[resource.type]
        candidates = self.provider_ids(resource.type)
        if not resource.provider_id:
            if len(candidates) == 1:
                resource.provider_id = candidates[0]
            elif not candidates:
                raise FailedPrecondition(f"no {api} provider is configured to serve {name} '{resource.identifier}'; "
                                         f"add one under providers.{api} in the config", reason="NO_PROVIDER")
            else:
                raise FailedPrecondition(
                    f"{name} '{resource.identifier}' could be served by several {api} providers "
                    f"({', '.join(candidates)}); pass provider_id to choose one", reason="AMBIGUOUS_PROVIDER",
                    metadata={"candidates": ",".join(candidates)})
        elif resource.provider_id not in candidates:
            raise NotFound(f"{api} provider '{resource.provider_id}' is not configured; configured {api} providers: "
                           f"{', '.join(candidates) or 'none'} (list them with `stackmesh providers list`)",
                           reason="PROVIDER_NOT_FOUND", metadata={"provider_id": resource.provider_id})
        if not resource.provider_resource_id:
            resource.provider_resource_id = resource.identifier
        if resource.type == T.RESOURCE_TYPE_MODEL:
            self._check_model(resource)
        elif resource.type == T.RESOURCE_TYPE_VECTOR_DB:
            self._check_vector_db(resource)
        elif resource.type == T.RESOURCE_TYPE_TOOL_GROUP:
            self._check_tool_group(resource)
        elif resource.type == T.RESOURCE_TYPE_SHIELD:
            self._check_shield(resource)
        elif resource.type == T.RESOURCE_TYPE_DATASET:
            check_dataset(resource)
        elif resource.type == T.RESOURCE_TYPE_SCORING_FUNCTION:
            check_aggregations(resource)
            judge = resource.scoring_function.params.fields.get("judge_model")
            if judge is not None and judge.string_value:
                self._llm(judge.string_value, f"judge model of scoring function '{resource.identifier}'")
        elif resource.type == T.RESOURCE_TYPE_BENCHMARK:
            self._check_benchmark(resource)

    def _lookup(self, resource_type: int, identifier: str) -> Resource:
        """Resolve a reference, seeing config entries checked before this one during reconciliation."""
        if self._pending is not None:
            pending = self._pending.get(resource_type, identifier)
            if pending is not None:
                return pending
        return self.index.resolve(resource_type, identifier, self.provider_ids(resource_type))

    def _check_model(self, resource: Resource) -> None:
        if resource.model.model_type == T.MODEL_TYPE_UNSPECIFIED:
            resource.model.model_type = T.MODEL_TYPE_LLM
        if resource.model.model_type == T.MODEL_TYPE_EMBEDDING:
            dim = resource.metadata.fields.get("embedding_dimension")
            value = dim.number_value if dim is not None and dim.WhichOneof("kind") == "number_value" else None
            if value is None or not math.isfinite(value) or value <= 0 or value != int(value):
                raise InvalidArgument(
                    f"embedding model '{resource.identifier}' needs metadata.embedding_dimension, a positive integer "
                    f"(e.g. --metadata '{{\"embedding_dimension\": 384}}')", reason="EMBEDDING_DIMENSION_MISSING")

    def _check_vector_db(self, resource: Resource) -> None:
        spec = resource.vector_db
        if not spec.embedding_model:
            raise InvalidArgument(f"vector DB '{resource.identifier}' needs an embedding_model",
                                  reason="EMBEDDING_MODEL_MISSING")
        model = self._lookup(T.RESOURCE_TYPE_MODEL, spec.embedding_model)
        if model.model.model_type != T.MODEL_TYPE_EMBEDDING:
            raise InvalidArgument(f"model '{spec.embedding_model}' is not an embedding model; "
                                  f"choose one whose type is embedding ({list_hint(T.RESOURCE_TYPE_MODEL)})",
                                  reason="NOT_AN_EMBEDDING_MODEL")
        dim = int(model.metadata.fields["embedding_dimension"].number_value) if "embedding_dimension" in model.metadata.fields else 0
        if spec.embedding_dimension and dim and spec.embedding_dimension != dim:
            raise InvalidArgument(f"vector DB '{resource.identifier}' asks for dimension {spec.embedding_dimension} "
                                  f"but model '{model.identifier}' produces {dim}; omit the dimension",
                                  reason="DIMENSION_MISMATCH")
        spec.embedding_model = model.identifier
        spec.embedding_dimension = spec.embedding_dimension or dim

    def _provider_type(self, api: str, provider_id: str) -> str:
        return next((p.provider_type for p in self.config.providers.get(api, []) if p.provider_id == provider_id), "")

    def _llm(self, model_id: str, role: str) -> Resource:
        """The registered LLM ``model_id``; NOT_FOUND / INVALID_ARGUMENT naming its ``role`` otherwise."""
        try:
            model = self._lookup(T.RESOURCE_TYPE_MODEL, model_id)
        except NotFound as err:
            raise NotFound(f"{role}: {err.message}", reason="MODEL_NOT_FOUND", metadata={"model": model_id}) from None
        require_llm(model, f"{role}: model '{model_id}'", unspecified_ok=False)
        return model

    def _check_shield(self, resource: Resource) -> None:
        if self._provider_type("safety", resource.provider_id) == "inline::llama-guard":
            # provider_resource_id defaulted to the identifier when not given: both name the model.
            self._llm(resource.provider_resource_id, f"llama-guard shield '{resource.identifier}' "
                                                     f"(its provider_shield_id names the model that classifies)")

    def _check_benchmark(self, resource: Resource) -> None:
        spec = resource.benchmark
        if not spec.dataset_id:
            raise InvalidArgument(f"benchmark '{resource.identifier}' needs a dataset_id", reason="DATASET_MISSING")
        if self.index.get(T.RESOURCE_TYPE_DATASET, spec.dataset_id) is None and (
                self._pending is None or self._pending.get(T.RESOURCE_TYPE_DATASET, spec.dataset_id) is None):
            raise NotFound(f"benchmark '{resource.identifier}': dataset '{spec.dataset_id}' not found; register it "
                           f"first or {list_hint(T.RESOURCE_TYPE_DATASET)}", reason="DATASET_NOT_FOUND",
                           metadata={"dataset_id": spec.dataset_id})
        if not spec.scoring_functions:
            raise InvalidArgument(f"benchmark '{resource.identifier}' needs at least one scoring function",
                                  reason="SCORING_FUNCTIONS_MISSING")
        for fn in spec.scoring_functions:
            try:
                self._lookup(T.RESOURCE_TYPE_SCORING_FUNCTION, fn)
            except NotFound:
                raise NotFound(f"benchmark '{resource.identifier}': scoring function '{fn}' not found; "
                               f"{list_hint(T.RESOURCE_TYPE_SCORING_FUNCTION)}", reason="SCORING_FUNCTION_NOT_FOUND",
                               metadata={"scoring_function": fn}) from None

    def _check_tool_group(self, resource: Resource) -> None:
        if self._provider_type("tool_runtime", resource.provider_id) == "remote::model-context-protocol":
            spec = resource.tool_group
            if bool(spec.mcp_endpoint) == bool(spec.mcp_command):
                raise InvalidArgument(f"MCP tool group '{resource.identifier}' needs exactly one of mcp_endpoint "
                                      f"(an HTTP/SSE URL) or mcp_command (a stdio server command)",
                                      reason="MCP_SERVER_MISSING")

    # ----------------------------------------------------------------- public operations
    async def register(self, resource: Resource) -> Resource:
        resource.source = resource.source or T.RESOURCE_SOURCE_REGISTERED

        def mutation():
            self._complete(resource)
            current = self.index.get(resource.type, resource.identifier)
            if current is None:
                return [resource], [], resource
            diff = spec_diff(current, resource)
            if not diff:
                return [], [], current  # the same spec again: a no-op
            name = catalog.RESOURCE_NAMES[resource.type]
            raise AlreadyExists(f"{name} '{resource.identifier}' already exists with a different "
                                f"{', '.join(diff)}; unregister it first or use another id",
                                reason="RESOURCE_EXISTS", metadata={"differing_fields": ",".join(diff)})

        return await self.journal.mutate(mutation)

    async def unregister(self, resource_type: int, identifier: str) -> Resource:
        def mutation():
            current = self.get(resource_type, identifier)
            return [], [current], current

        return await self.journal.mutate(mutation)

    def get(self, resource_type: int, identifier: str) -> Resource:
        current = self.index.get(resource_type, identifier)
        if current is None:
            name = catalog.RESOURCE_NAMES[resource_type]
            raise NotFound(f"{name} '{identifier}' not found; {list_hint(resource_type)}",
                           reason="RESOURCE_NOT_FOUND", metadata={"identifier": identifier})
        return current

    def resolve(self, resource_type: int, identifier: str) -> Resource:
        return self.index.resolve(resource_type, identifier, self.provider_ids(resource_type))

    async def sync_discovered(self, provider_id: str, resource_type: int,
                              listed: Iterable[Resource]) -> tuple[int, int, int]:
        """Make the DISCOVERED entries of ``provider_id`` equal ``listed``, in one transaction."""
        if provider_id not in self.provider_ids(resource_type):
            raise NotFound(f"provider '{provider_id}' is not configured for {catalog.RESOURCE_API[resource_type]}",
                           reason="PROVIDER_NOT_FOUND")
        wanted: dict[str, Resource] = {}
        for item in listed:
            resource = Resource()
            resource.CopyFrom(item)
            resource.type, resource.provider_id = resource_type, provider_id
            resource.source = T.RESOURCE_SOURCE_DISCOVERED
            # Models are named provider_id/x (DESIGN §2); other types keep the well-known id their
            # provider gives them (basic::equality), as Llama Stack users know them.
            if resource_type == T.RESOURCE_TYPE_MODEL or not resource.identifier:
                resource.identifier = f"{provider_id}/{resource.provider_resource_id}"
            resource.provider_resource_id = resource.provider_resource_id or resource.identifier
            wanted[resource.identifier] = resource

        def mutation():
            puts, deletes, updated = [], [], 0
            for identifier, resource in wanted.items():
                current = self.index.get(resource_type, identifier)
                if current is None:
                    puts.append(resource)
                elif current.source != T.RESOURCE_SOURCE_DISCOVERED or current.provider_id != provider_id:
                    continue  # a user, the config or another provider owns this id: never touched here
                elif spec_diff(current, resource):
                    resource.create_time.CopyFrom(current.create_time)
                    puts.append(resource)
                    updated += 1
            for current in self.index.all(resource_type):
                if (current.source == T.RESOURCE_SOURCE_DISCOVERED and current.provider_id == provider_id
                        and current.identifier not in wanted):
                    deletes.append(current)
            return puts, deletes, (len(puts) - updated, updated, len(deletes))

        return await self.journal.mutate(mutation)

    # ----------------------------------------------------------------- health
    def report_health(self, api: str, provider_id: str, health: int, message: str) -> None:
        self._health[(api, provider_id)] = (health, message, time.time())

    def providers(self) -> list[T.Provider]:
        unsupported = {(u.api, u.provider_id): u.reason for u in self.config.unsupported}
        out = []
        for api, entry in self.config.all_providers():
            provider = T.Provider(provider_id=entry.provider_id, provider_type=entry.provider_type, api=api)
            key = (api, entry.provider_id)
            if key in unsupported:
                provider.health, provider.health_message = T.PROVIDER_HEALTH_UNSUPPORTED, unsupported[key]
            elif key in self._health:
                health, message, at = self._health[key]
                provider.health_time.FromNanoseconds(int(at * 1e9))
                age = time.time() - at
                if age > HEALTH_STALE_SECONDS:
                    health, message = T.PROVIDER_HEALTH_UNHEALTHY, f"no report from the {api} service for {age:.0f} s"
                provider.health, provider.health_message = health, message
            else:
                provider.health, provider.health_message = T.PROVIDER_HEALTH_UNKNOWN, f"the {api} service has not reported yet"
            out.append(provider)
        return out

    # ----------------------------------------------------------------- watch
    def watch(self, since_revision: int) -> AsyncIterator[WatchEvent]:
        return self.journal.watch(since_revision)
