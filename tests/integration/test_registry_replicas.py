"""Several registry replicas on one PostgreSQL database: changes reach every replica's watchers
through the database (LISTEN/NOTIFY), revisions stay unique, and the rules hold across replicas."""

from __future__ import annotations

import concurrent.futures
import statistics
import threading
import time

import grpc
import pytest

from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc as rgrpc
from tests.support.mesh import ServiceProcess, free_port, write_config


@pytest.fixture
def replicas(tmp_path, postgres):
    backend = postgres.backend(postgres.new_database())
    processes = []
    for name in ("a", "b"):
        port = free_port()
        config = write_config(tmp_path, ports={"registry": port}, name=f"{name}.yaml", registry_backend=backend)
        processes.append(ServiceProcess("registry", config, port, tmp_path))
    # Start them together: schema creation and config reconciliation must not collide.
    threads = [threading.Thread(target=p.start) for p in processes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    yield processes
    for p in processes:
        p.stop()


def test_a_registration_on_one_replica_reaches_watchers_of_the_other_quickly(replicas):
    a, b = replicas
    with grpc.insecure_channel(a.address) as ca, grpc.insecure_channel(b.address) as cb:
        models_a = rgrpc.ModelsServiceStub(ca)
        watch = rgrpc.RegistryServiceStub(cb).WatchResources(rpb.WatchResourcesRequest(since_revision=0))
        seen: dict[str, float] = {}

        def follow():
            try:
                for event in watch:
                    if event.event_type == rpb.WATCH_EVENT_TYPE_PUT:
                        seen[event.resource.identifier] = time.perf_counter()
            except grpc.RpcError as err:  # the test cancels the watch when done
                assert err.code() == grpc.StatusCode.CANCELLED

        threading.Thread(target=follow, daemon=True).start()
        delays = []
        for i in range(20):
            started = time.perf_counter()
            models_a.RegisterModel(rpb.RegisterModelRequest(model_id=f"p{i}", provider_id="llama-cpp"), timeout=10)
            deadline = started + 2
            while f"p{i}" not in seen and time.perf_counter() < deadline:
                time.sleep(0.001)
            assert f"p{i}" in seen, f"replica b's watcher never saw p{i}"
            delays.append(seen[f"p{i}"] - started)
        watch.cancel()
    median, worst = statistics.median(delays) * 1000, max(delays) * 1000
    print(f"propagation across replicas (register on a -> watcher on b): median {median:.1f} ms, max {worst:.1f} ms")
    assert max(delays) < 1.0
    with grpc.insecure_channel(b.address) as cb:
        got = rgrpc.ModelsServiceStub(cb).GetModel(rpb.GetModelRequest(model_id="p19"), timeout=5)
    assert got.model.provider_id == "llama-cpp"


def test_concurrent_writes_on_both_replicas_keep_the_rules(replicas):
    stubs = [rgrpc.ModelsServiceStub(grpc.insecure_channel(p.address)) for p in replicas]

    def register(i: int) -> int:
        reply = stubs[i % 2].RegisterModel(rpb.RegisterModelRequest(model_id=f"c{i}", provider_id="llama-cpp"), timeout=10)
        return reply.model.revision

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        revisions = list(pool.map(register, range(100)))
    assert len(set(revisions)) == 100  # no revision handed out twice across replicas
    # The same id with different specs on both replicas: exactly one wins, the other is ALREADY_EXISTS.
    outcomes = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(stubs[i].RegisterModel, rpb.RegisterModelRequest(
            model_id="contested", provider_id="llama-cpp", provider_model_id=f"spec-{i}"), timeout=10) for i in (0, 1)]
        for future in futures:
            try:
                outcomes.append(future.result().model.provider_resource_id)
            except grpc.RpcError as err:
                outcomes.append(err.code())
    assert sorted(map(str, outcomes)).count(str(grpc.StatusCode.ALREADY_EXISTS)) == 1, outcomes
    for stub in stubs:
        listed = stub.ListModels(rpb.ListModelsRequest(page_size=1000), timeout=10)
        assert len(listed.models) == 101
