"""The gateway balances over replicas of a service, retries idempotent calls on UNAVAILABLE, and
uses a restarted replica again."""

from __future__ import annotations

import collections
import time

import grpc
import pytest

from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc
from tests.support.mesh import LocalMesh

pytestmark = pytest.mark.slow

PROVIDERS = {"inference": [{"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"}]}


def served_by(stub, n: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        reply, call = stub.Embeddings.with_call(ipb.EmbeddingsRequest(model="all-MiniLM-L6-v2", input=["hi"]), timeout=60)
        assert len(reply.data[0].embedding) == 384
        counts[dict(call.trailing_metadata())["stackmesh-served-by"]] += 1
    return counts


def test_round_robin_failover_and_return(tmp_path):
    with LocalMesh(tmp_path, providers=PROVIDERS, inference_replicas=2) as mesh, \
            grpc.insecure_channel(mesh.url) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the model list is discovered asynchronously
            try:
                served_by(stub, 1)
                break
            except grpc.RpcError:
                time.sleep(0.2)
        counts = served_by(stub, 20)
        replicas = {f"inference@{p.address}" for p in mesh.inference}
        assert set(counts) == replicas, counts
        assert min(counts.values()) >= 5, counts  # round robin, not all on one

        dead, alive = mesh.inference
        dead.kill9()
        counts = served_by(stub, 20)  # no call fails: UNAVAILABLE is retried on the live replica
        assert set(counts) == {f"inference@{alive.address}"}

        dead.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if f"inference@{dead.address}" in served_by(stub, 4):
                break
        else:
            raise AssertionError("the restarted replica never served again")
