"""Pick the registry store the config asks for (Llama Stack's ``storage`` section decides)."""

from __future__ import annotations

from typing import Any

from services.common.config import StackConfig
from services.common.errors import ConfigError

__all__ = ["open_store", "describe_store"]

_POSTGRES_TYPES = ("kv_postgres", "sql_postgres")


def _metadata_backend(config: StackConfig) -> tuple[str, dict[str, Any]]:
    storage = config.storage or {}
    name = ((storage.get("stores") or {}).get("metadata") or {}).get("backend") or ""
    return name, (storage.get("backends") or {}).get(name) or {}


def describe_store(config: StackConfig) -> str:
    name, backend = _metadata_backend(config)
    if not config.mesh.registry_db and backend.get("type") in _POSTGRES_TYPES:
        return f"postgresql://{backend.get('host') or 'localhost'}:{backend.get('port') or 5432}/{backend.get('db') or 'llamastack'}"
    return str(config.registry_db_path())


def open_store(config: StackConfig) -> Any:
    """``mesh.registry_db`` wins; else storage.stores.metadata's backend: kv_postgres -> PostgreSQL,
    anything else -> the SQLite file it names (or ~/.stackmesh/<name>/registry.db)."""
    name, backend = _metadata_backend(config)
    if not config.mesh.registry_db and backend.get("type") in _POSTGRES_TYPES:
        from services.registry.pg_store import PostgresRegistryStore, dsn_from_backend

        import psycopg

        try:
            return PostgresRegistryStore(dsn_from_backend(backend))
        except psycopg.OperationalError as err:
            raise ConfigError(f"storage.backends.{name}", f"cannot reach the registry's PostgreSQL "
                              f"({describe_store(config)}): {str(err).strip()}") from None
    from services.registry.store import SqliteRegistryStore

    return SqliteRegistryStore(config.registry_db_path())
