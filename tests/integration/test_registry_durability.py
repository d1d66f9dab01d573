"""Nothing acknowledged is lost: registrations survive ``kill -9`` of the registry process."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import grpc

from services.registry.store import OP_PUT, Change, prepare_changes
from stackmesh.common.v1 import common_pb2

from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc as rgrpc
from tests.support.mesh import ServiceProcess, free_port, write_config


def test_acknowledged_registrations_survive_kill_9(tmp_path):
    port = free_port()
    config = write_config(tmp_path, ports={"registry": port})
    registry = ServiceProcess("registry", config, port, tmp_path).start()
    acknowledged: list[str] = []
    try:
        with grpc.insecure_channel(registry.address) as channel:
            stub = rgrpc.ModelsServiceStub(channel)

            def register(i: int) -> str | None:
                try:
                    stub.RegisterModel(rpb.RegisterModelRequest(model_id=f"durable-{i}", provider_id="llama-cpp"), timeout=10)
                    return f"durable-{i}"
                except grpc.RpcError:
                    return None  # in flight when the process died: not acknowledged, may or may not exist

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(register, i) for i in range(300)]
                for n, future in enumerate(futures):
                    if n == 200:
                        registry.kill9()  # while registrations are still in flight
                    result = future.result()
                    if result:
                        acknowledged.append(result)
        assert len(acknowledged) >= 200
        registry = ServiceProcess("registry", config, port, tmp_path).start()
        with grpc.insecure_channel(registry.address) as channel:
            listed = rgrpc.ModelsServiceStub(channel).ListModels(rpb.ListModelsRequest(page_size=10000), timeout=10)
        present = {m.identifier for m in listed.models}
        missing = set(acknowledged) - present
        assert not missing, f"{len(missing)} acknowledged registrations lost"
        revisions = sorted(m.revision for m in listed.models)
        assert len(set(revisions)) == len(revisions)  # one revision per change, none reused
    finally:
        registry.stop()



def _open_store(tmp_path, backend):
    if backend is None:
        from services.registry.store import SqliteRegistryStore
        return SqliteRegistryStore(tmp_path / "registry.db")
    from services.registry.pg_store import PostgresRegistryStore, dsn_from_backend
    return PostgresRegistryStore(dsn_from_backend(backend))


def _model(identifier: str) -> common_pb2.Resource:
    return common_pb2.Resource(type=common_pb2.RESOURCE_TYPE_MODEL, identifier=identifier, provider_id="llama-cpp")


def test_closing_a_store_under_running_queries_fails_them_cleanly(tmp_path, backend):
    """Shutdown closes the store while worker threads may still read or write it: those calls
    must end in an exception, never crash the process (libpq frees a connection on close)."""
    store = _open_store(tmp_path, backend)
    store.begin(0)
    seed = prepare_changes([_model(f"seed-{i}") for i in range(200)], [], 0)
    store.commit(seed)  # something for the readers to read
    revision = seed[-1].revision
    stop = threading.Event()
    outcomes: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                store.changes_since(0)
            except Exception as err:  # noqa: BLE001 - the point: an exception, not a crash
                outcomes.append(type(err).__name__)
                return

    def writer() -> None:
        n = revision
        while not stop.is_set():
            try:
                store.begin(n)
                n += 1
                store.commit([Change(n, OP_PUT, _model(f"w-{n}"))])
            except Exception as err:  # noqa: BLE001
                outcomes.append(type(err).__name__)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    store.close()
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == len(threads), outcomes  # every thread saw the store close
    assert set(outcomes) <= {"OperationalError", "ProgrammingError"}, outcomes
