"""Faults on this machine, as local processes: an inference replica killed under load, and the
registry killed while the mesh keeps serving from its caches."""

from __future__ import annotations

import collections
import threading
import time

import grpc
import pytest

from services.common.errors import error_info_from_rpc_error
from stackmesh.client import StackmeshClient
from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc
from tests.support.mesh import LocalMesh
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

LLAMA = {"inference": [{"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp"}]}
MODEL = "SmolLM2-135M-Instruct"


def chat_request(prompt: str, max_tokens: int) -> ipb.ChatCompletionRequest:
    return StackmeshClient.chat_request(MODEL, prompt, max_tokens=max_tokens, temperature=0.0)


class SteadyLoad:
    """Threads sending short unary chats in a loop; records who served each and every failure."""

    def __init__(self, stub, threads: int = 3) -> None:
        self.stub = stub
        self.served: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _, call = self.stub.ChatCompletion.with_call(chat_request("Hi", 1), timeout=60)
                self.served.append((time.monotonic(), dict(call.trailing_metadata())["stackmesh-served-by"]))
            except grpc.RpcError as err:
                self.failures.append(f"{err.code().name}: {err.details()}")

    def __enter__(self) -> "SteadyLoad":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def since(self, moment: float) -> collections.Counter[str]:
        return collections.Counter(who for at, who in self.served if at >= moment)




def test_a_replica_killed_under_load(tmp_path):
    with LocalMesh(tmp_path, providers=LLAMA, inference_replicas=3) as mesh, \
            grpc.insecure_channel(mesh.url) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        names = [f"inference@{p.address}" for p in mesh.inference]
        wait_until(lambda: _try(stub), 60, "the model to be discovered")
        victim, survivors = mesh.inference[0], names[1:]
        with SteadyLoad(stub) as load:
            wait_until(lambda: set(load.since(0)) == set(names), 60, "all three replicas to serve")
            # A long stream on the victim, cut mid-way.
            stream, placed = None, []
            for _ in range(12):
                call = stub.StreamChatCompletion(chat_request("Write a long story about a dragon.", 400), timeout=120)
                placed.append(dict(call.initial_metadata()).get("stackmesh-served-by"))
                if placed[-1] == names[0]:
                    stream = call
                    break
                call.cancel()
            assert stream is not None, f"round robin never placed a stream on the victim: {placed}"
            first = next(stream)
            assert first.choices
            victim.kill9()
            killed_at = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                for _ in stream:
                    pass
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "stream was cut" in caught.value.details() and names[0] in caught.value.details()
            assert error_info_from_rpc_error(caught.value).reason == "STREAM_INTERRUPTED"

            time.sleep(3)
            after = load.since(killed_at + 0.5)
            assert set(after) == set(survivors), after  # rebalanced to the remaining two
            assert min(after.values()) >= 3, after
            victim.start()
            restarted_at = time.monotonic()
            wait_until(lambda: names[0] in load.since(restarted_at), 60, "the restarted replica to be used again")
        assert load.failures == [], load.failures[:5]  # no unary request failed: UNAVAILABLE was retried
        print(f"served {len(load.served)} unary chats across the kill and the restart, 0 failures")


def _try(stub) -> bool:
    try:
        stub.ChatCompletion(chat_request("Hi", 1), timeout=30)
        return True
    except grpc.RpcError:
        return False


def test_registry_down_the_mesh_keeps_serving_and_resyncs(tmp_path):
    providers = {"inference": [{"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"}]}
    with LocalMesh(tmp_path, providers=providers) as mesh, StackmeshClient(mesh.url, timeout=30) as sm:
        wait_until(lambda: len(sm.list("models")) == 1, 60, "the model to be discovered")
        assert len(sm.embed("all-MiniLM-L6-v2", ["warm up"])[0]) == 384
        mesh.registry.kill9()
        # Data requests route from the watched caches: no registry needed.
        for _ in range(5):
            assert len(sm.embed("all-MiniLM-L6-v2", ["still serving"])[0]) == 384
        with pytest.raises(Exception) as caught:  # registry calls themselves say the registry is down
            sm.list("models")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        mesh.registry.start()
        sm.register_model("after-restart", provider_id="sentence-transformers",
                          provider_model_id="all-MiniLM-L6-v2", model_type="embedding",
                          metadata={"embedding_dimension": 384})
        # The caches resynced: the new registration is routable through the gateway and the service.
        wait_until(lambda: _embeds(sm, "after-restart"), 20, "the new model to be routable")


def _embeds(sm: StackmeshClient, model: str) -> bool:
    try:
        return len(sm.embed(model, ["x"])[0]) == 384
    except Exception:  # noqa: BLE001 - NOT_FOUND until the caches have it
        return False
