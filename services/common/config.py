"""The run config: one YAML file, a superset of Llama Stack's run config.

``load_config(path)`` reads the file, substitutes ``${env...}`` (see ``envsubst``), validates the
shape and every supported provider's own config, and fails fast with a ``ConfigError`` naming the
dotted key path of the first bad entry. Providers stackmesh lacks are not errors: they are listed
in ``StackConfig.unsupported`` by provider_type so ``stackmesh config check`` can name them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from services.common import catalog
from services.common.envsubst import substitute
from services.common.errors import ConfigError

__all__ = [
    "ProviderEntry", "ModelEntry", "RegisteredResources", "MeshConfig", "ServerConfig",
    "StackConfig", "UnsupportedProvider", "load_config", "parse_config", "DEFAULT_CONFIG_PATH",
]

DEFAULT_CONFIG_PATH = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "run.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderEntry(_Strict):
    provider_id: str = Field(description="Unique id of this provider instance.")
    provider_type: str = Field(description="inline::<name> or remote::<name>.")
    config: dict[str, Any] = Field(default_factory=dict, description="Provider-specific config.")
    module: str | None = Field(default=None, description="Llama Stack external provider module (not supported).")


class ModelEntry(_Strict):
    model_id: str
    provider_id: str | None = None
    provider_model_id: str | None = None
    model_type: Literal["llm", "embedding", "rerank"] = "llm"
    metadata: dict[str, Any] = Field(default_factory=dict)


class ShieldEntry(_Strict):
    shield_id: str
    provider_id: str | None = None
    provider_shield_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class VectorDBEntry(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    vector_db_id: str = Field(validation_alias=pydantic.AliasChoices("vector_db_id", "vector_store_id"))
    embedding_model: str
    embedding_dimension: int | None = None
    provider_id: str | None = None
    provider_vector_db_id: str | None = None
    vector_db_name: str | None = None


class DatasetEntry(_Strict):
    dataset_id: str
    purpose: str
    source: dict[str, Any]
    provider_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScoringFnEntry(_Strict):
    scoring_fn_id: str
    description: str = ""
    return_type: Any = None
    provider_id: str | None = None
    provider_scoring_fn_id: str | None = None
    params: dict[str, Any] | None = None


class BenchmarkEntry(_Strict):
    benchmark_id: str
    dataset_id: str
    scoring_functions: list[str]
    provider_id: str | None = None
    provider_benchmark_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ToolGroupEntry(_Strict):
    toolgroup_id: str
    provider_id: str | None = None
    mcp_endpoint: dict[str, Any] | None = None
    mcp_command: list[str] | None = Field(default=None, description="stdio MCP server command (stackmesh extension).")
    args: dict[str, Any] | None = None


class RegisteredResources(_Strict):
    models: list[ModelEntry] = Field(default_factory=list)
    shields: list[ShieldEntry] = Field(default_factory=list)
    vector_dbs: list[VectorDBEntry] = Field(default_factory=list)
    vector_stores: list[VectorDBEntry] = Field(default_factory=list)
    datasets: list[DatasetEntry] = Field(default_factory=list)
    scoring_fns: list[ScoringFnEntry] = Field(default_factory=list)
    benchmarks: list[BenchmarkEntry] = Field(default_factory=list)
    tool_groups: list[ToolGroupEntry] = Field(default_factory=list)


class ServiceTarget(_Strict):
    """Where one service runs: a gRPC target. A list of host:port balances over those replicas;
    ``dns:///name:port`` follows DNS (docker compose --scale, Kubernetes headless Services)."""

    target: str = Field(description="gRPC target, e.g. 127.0.0.1:50053, ipv4:a:1,b:2 or dns:///inference:50051")
    port: int | None = Field(default=None, description="Port `stackmesh run` binds for this service.")


class MeshConfig(_Strict):
    """stackmesh's own section: where each process listens and how they find each other."""

    host: str = Field(default="127.0.0.1", description="Address every process binds by default.")
    registry: ServiceTarget | None = None
    services: dict[str, ServiceTarget] = Field(default_factory=dict)
    provider_services: dict[str, ServiceTarget] = Field(
        default_factory=dict, description="provider_id -> a dedicated deployment of its API's service; the "
        "gateway sends requests for that provider's resources there instead of the API's default target.")
    registry_db: str | None = Field(default=None, description="SQLite file of the registry; "
                                    "defaults to storage.backends[stores.metadata.backend].db_path.")
    refresh_interval_seconds: float = Field(default=60.0, gt=0,
                                            description="Default discovery refresh period for refresh_models providers.")

    def target_of(self, name: str) -> str:
        """The gRPC target of ``name`` (registry or an API), from config, env, or the default port."""
        env = os.environ.get(f"STACKMESH_{name.upper()}_TARGET")
        if env:
            return env
        entry = self.registry if name == "registry" else self.services.get(name)
        if entry is not None:
            return entry.target
        return f"{self.host}:{catalog.DEFAULT_PORTS[name]}"

    def port_of(self, name: str) -> int:
        entry = self.registry if name == "registry" else self.services.get(name)
        if entry is not None and entry.port is not None:
            return entry.port
        if entry is not None and entry.target.rsplit(":", 1)[-1].isdigit() and "," not in entry.target:
            return int(entry.target.rsplit(":", 1)[-1])
        return catalog.DEFAULT_PORTS[name]


class ServerConfig(BaseModel):
    """The public front door (the gateway). Llama Stack keys (tls_*, auth, quota, ...) are accepted."""

    model_config = ConfigDict(extra="allow")
    port: int = Field(default=catalog.DEFAULT_PORTS["gateway"], ge=0, le=65535)
    host: str | None = None


@dataclasses.dataclass(frozen=True)
class UnsupportedProvider:
    api: str
    provider_id: str
    provider_type: str
    reason: str


# Llama Stack top-level keys stackmesh accepts and does not use.
_LLAMA_STACK_PASSTHROUGH = (
    "vector_stores", "safety", "external_providers_dir", "external_apis_dir", "logging", "telemetry",
    "metadata_store", "inference_store", "conversations_store", "quota", "container_image",
    "benchmarks_store", "connectors",
)
# Llama Stack < 0.3 put registered resources at the top level.
_LEGACY_RESOURCE_KEYS = ("models", "shields", "vector_dbs", "datasets", "scoring_fns", "benchmarks", "tool_groups")


class StackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | str = 2
    image_name: str | None = None
    distro_name: str | None = None
    apis: list[str] = Field(default_factory=list)
    providers: dict[str, list[ProviderEntry]] = Field(default_factory=dict)
    registered_resources: RegisteredResources = Field(default_factory=RegisteredResources)
    storage: dict[str, Any] | None = None
    server: ServerConfig = Field(default_factory=ServerConfig)
    mesh: MeshConfig = Field(default_factory=MeshConfig)
    passthrough: dict[str, Any] = Field(default_factory=dict, exclude=True)
    # Filled by the loader, not read from the file.
    source_path: str | None = Field(default=None, exclude=True)
    unsupported: list[UnsupportedProvider] = Field(default_factory=list, exclude=True)
    skipped: list[str] = Field(default_factory=list, exclude=True)

    @property
    def name(self) -> str:
        return self.distro_name or self.image_name or "stackmesh"

    def supported_providers(self, api: str) -> list[ProviderEntry]:
        bad = {(u.api, u.provider_id) for u in self.unsupported}
        return [p for p in self.providers.get(api, []) if (api, p.provider_id) not in bad]

    def all_providers(self) -> list[tuple[str, ProviderEntry]]:
        return [(api, p) for api, entries in self.providers.items() for p in entries]

    def apis_to_serve(self) -> list[str]:
        """APIs that have at least one provider stackmesh can run, in catalog order."""
        return [api for api in catalog.served_apis() if self.supported_providers(api)]

    def registry_db_path(self) -> pathlib.Path:
        if self.mesh.registry_db:
            return pathlib.Path(self.mesh.registry_db).expanduser()
        storage = self.storage or {}
        backend_name = ((storage.get("stores") or {}).get("metadata") or {}).get("backend")
        backend = (storage.get("backends") or {}).get(backend_name) or {}
        if backend.get("type") in ("kv_sqlite", "sql_sqlite") and backend.get("db_path"):
            return pathlib.Path(str(backend["db_path"])).expanduser()
        return pathlib.Path(f"~/.stackmesh/{self.name}/registry.db").expanduser()


class _Paths:
    """Turns a location in the processed data back into the key path of the file: entries dropped
    before validation (disabled providers, unnamed resources) and legacy top-level resource lists
    moved under registered_resources must not shift or rename what the error names."""

    def __init__(self) -> None:
        self.kept_indices: dict[str, list[int]] = {}
        self.moved: dict[str, str] = {}  # processed prefix -> file prefix

    def to_file(self, path: str) -> str:
        out, last = "", 0
        for match in re.finditer(r"\[(\d+)\]", path):
            out += path[last:match.start()]
            kept = self.kept_indices.get(path[:match.start()])
            index = int(match.group(1))
            out += f"[{kept[index] if kept and index < len(kept) else index}]"
            last = match.end()
        out += path[last:]
        for processed, original in self.moved.items():
            if out == processed or out.startswith(processed + "[") or out.startswith(processed + "."):
                return original + out[len(processed):]
        return out


def _format_loc(loc: tuple[Any, ...], data: Any, last_kind: str) -> str:
    """Dotted path of ``loc``, leaving out pydantic's union tags (``int``, ``function-after``...):
    only parts that exist in the data are kept, plus a missing key at the end."""
    out, current = "", data
    for n, part in enumerate(loc):
        if isinstance(part, int) and isinstance(current, list) and 0 <= part < len(current):
            out += f"[{part}]"
            current = current[part]
        elif isinstance(part, str) and isinstance(current, dict) and part in current:
            out += f".{part}" if out else part
            current = current[part]
        elif n == len(loc) - 1 and last_kind == "missing":
            out += f".{part}" if out else str(part)
    return out


def _raise_validation(err: pydantic.ValidationError, data: Any, prefix: str, paths: _Paths) -> None:
    first = err.errors()[0]
    loc = _format_loc(tuple(first["loc"]), data, first["type"])
    path = paths.to_file(f"{prefix}.{loc}" if prefix and loc else (prefix or loc))
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling and the allowed keys in the README)"
    raise ConfigError(path, message) from None


def _validate_provider_configs(config: StackConfig, paths: _Paths) -> None:
    for api, entries in config.providers.items():
        seen: dict[str, str] = {}  # ids are unique per API (Llama Stack reuses meta-reference across APIs)
        for i, entry in enumerate(entries):
            path = f"providers.{api}[{i}]"
            if entry.provider_id in seen:
                raise ConfigError(paths.to_file(f"{path}.provider_id"),
                                  f"provider_id '{entry.provider_id}' is already used by {seen[entry.provider_id]}")
            seen[entry.provider_id] = paths.to_file(path)
            if api not in catalog.API_SERVICES:
                reason = f"stackmesh does not serve the '{api}' API yet"
                config.unsupported.append(UnsupportedProvider(api, entry.provider_id, entry.provider_type, reason))
                continue
            spec = catalog.find_provider_spec(api, entry.provider_type)
            if spec is None:
                known = ", ".join(sorted(catalog.provider_table(api)))
                reason = f"no such {api} provider in stackmesh (available: {known})"
                config.unsupported.append(UnsupportedProvider(api, entry.provider_id, entry.provider_type, reason))
                continue
            try:
                catalog.import_object(spec.config_class).model_validate(entry.config)
            except pydantic.ValidationError as err:
                _raise_validation(err, entry.config, f"{path}.config", paths)


_RESOURCE_ID_KEYS = {"models": ("model_id",), "shields": ("shield_id",),
                     "vector_dbs": ("vector_db_id", "vector_store_id"),
                     "vector_stores": ("vector_store_id", "vector_db_id"), "datasets": ("dataset_id",),
                     "scoring_fns": ("scoring_fn_id",), "benchmarks": ("benchmark_id",),
                     "tool_groups": ("toolgroup_id",)}


def _drop_unnamed_resources(raw: dict[str, Any], skipped: list[str], paths: _Paths) -> None:
    """A resource whose id key is present but resolved empty is dropped (Llama Stack's conditional
    resources). A missing id key is left for validation to report."""
    resources = raw.get("registered_resources")
    if not isinstance(resources, dict):
        return
    for kind, keys in _RESOURCE_ID_KEYS.items():
        entries = resources.get(kind)
        if not isinstance(entries, list):
            continue
        kept, kept_indices = [], []
        list_path = f"registered_resources.{kind}"
        for i, entry in enumerate(entries):
            present = [k for k in keys if isinstance(entry, dict) and k in entry]
            if present and all(entry[k] in (None, "") for k in present):
                skipped.append(f"{paths.to_file(f'{list_path}[{i}]')} ({present[0]} resolved empty)")
                continue
            kept.append(entry)
            kept_indices.append(i)
        if len(kept) != len(entries):
            paths.kept_indices[list_path] = kept_indices
        resources[kind] = kept


def parse_config(raw: Any, source: str | None = None, env: dict[str, str] | None = None) -> StackConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("", f"the config must be a YAML mapping, got {type(raw).__name__}")
    skipped: list[str] = []
    paths = _Paths()
    data = substitute(raw, "", env, skipped, paths.kept_indices)
    passthrough = {k: data.pop(k) for k in _LLAMA_STACK_PASSTHROUGH if k in data}
    legacy = {k: data.pop(k) for k in _LEGACY_RESOURCE_KEYS if k in data}
    if legacy:
        resources = data.get("registered_resources") or {}
        for key, value in legacy.items():
            if resources.get(key):
                raise ConfigError(key, f"resources are listed both at the top level ({key}) and under "
                                       f"registered_resources.{key}; keep one list")
            resources[key] = value or []
            paths.moved[f"registered_resources.{key}"] = key
            if key in paths.kept_indices:
                paths.kept_indices[f"registered_resources.{key}"] = paths.kept_indices.pop(key)
        data["registered_resources"] = resources
    if data.get("registered_resources") is None:
        data.pop("registered_resources", None)
    _drop_unnamed_resources(data, skipped, paths)
    for key in ("server", "mesh", "providers"):
        if key in data and data[key] is None:
            data.pop(key)
    try:
        config = StackConfig.model_validate(data)
    except pydantic.ValidationError as err:
        _raise_validation(err, data, "", paths)
    config.passthrough = passthrough
    config.source_path = source
    config.skipped = skipped
    _validate_provider_configs(config, paths)
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> StackConfig:
    """Load and validate a run config (default: ``$STACKMESH_CONFIG`` or ``deploy/run.yaml``)."""
    path = pathlib.Path(path or os.environ.get("STACKMESH_CONFIG") or DEFAULT_CONFIG_PATH).expanduser()
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError("", f"cannot read config file {path}: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    return parse_config(raw, str(path))
