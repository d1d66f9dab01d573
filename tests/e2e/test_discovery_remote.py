"""Discovery against a real OpenAI-compatible server (llama.cpp's server on SmolLM2),
configured as ``remote::vllm`` with ``refresh_models: true``."""

from __future__ import annotations


import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stackmesh.client import StackmeshClient, StackmeshClientError
from tests.support.llama_server import LlamaServer
from tests.support.mesh import LocalMesh
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

REFRESH = 1.5
HEALTHY, UNHEALTHY = 1, 2




def test_remote_models_follow_the_server(tmp_path):
    with LlamaServer(alias="smol-a") as server:
        providers = {"inference": [{
            "provider_id": "vllm-local", "provider_type": "remote::vllm",
            "config": {"base_url": server.base_url, "refresh_models": True, "refresh_interval_seconds": REFRESH,
                       "api_token": "fake"}}]}
        with LocalMesh(tmp_path, providers=providers) as mesh, StackmeshClient(mesh.url) as sm:
            ids = lambda: {m.identifier: m for m in sm.list("models")}  # noqa: E731
            wait_until(lambda: "vllm-local/smol-a" in ids(), 30, "the server's model to be discovered")
            assert ids()["vllm-local/smol-a"].source == 3  # DISCOVERED

            # The data path through the remote provider works, by full and by short name.
            question = "What is the capital of France? Answer in one short English sentence."
            answer = sm.chat("vllm-local/smol-a", question, max_tokens=16, temperature=0)
            assert "paris" in answer.lower()
            streamed = "".join(sm.stream_chat("smol-a", question, max_tokens=16, temperature=0))
            assert "paris" in streamed.lower()

            sm.register_model("my-alias", provider_id="vllm-local", provider_model_id="smol-a")

            # Restart under another alias: the registry follows within one refresh interval.
            server.restart(alias="smol-b")
            took = wait_until(lambda: "vllm-local/smol-b" in ids() and "vllm-local/smol-a" not in ids(),
                            REFRESH * 3 + 5, "the new alias to replace the old one")
            print(f"registry followed the restarted server {took:.2f} s after it was ready")
            assert "my-alias" in ids() and ids()["my-alias"].provider_resource_id == "smol-a"  # untouched

            # Stop the server: nothing crashes, the provider turns unhealthy, entries are kept.
            server.stop()
            wait_until(lambda: {p.provider_id: p.health for p in sm.providers()}["vllm-local"] == UNHEALTHY,
                     REFRESH * 3 + 10, "the provider to show unhealthy")
            message = {p.provider_id: p for p in sm.providers()}["vllm-local"].health_message
            assert server.base_url.rsplit("/", 1)[0] in message or "127.0.0.1" in message, message
            assert all(p.process.poll() is None for p in [mesh.registry, mesh.gateway, *mesh.inference])
            with grpc.insecure_channel(mesh.inference[0].address) as channel:  # the service's own health
                health = health_pb2_grpc.HealthStub(channel)
                provider = health.Check(health_pb2.HealthCheckRequest(service="provider/vllm-local"), timeout=5)
                overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert provider.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert overall.status == health_pb2.HealthCheckResponse.SERVING
            assert "vllm-local/smol-b" in ids()  # could not list: kept
            with pytest.raises(StackmeshClientError) as caught:
                sm.chat("vllm-local/smol-b", "hi", max_tokens=4)
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE

            server.start()
            wait_until(lambda: {p.provider_id: p.health for p in sm.providers()}["vllm-local"] == HEALTHY,
                     REFRESH * 3 + 15, "the provider to recover")
