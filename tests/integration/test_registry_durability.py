"""Nothing acknowledged is lost: registrations survive ``kill -9`` of the registry process."""

from __future__ import annotations

import concurrent.futures

import grpc

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
