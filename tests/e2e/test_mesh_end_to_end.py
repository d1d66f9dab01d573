"""The whole mesh as real processes on 127.0.0.1: registry, inference, gateway, called like a user does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import grpc
import pytest

from stackmesh.client import StackmeshClient, StackmeshClientError
from stackmesh.inference.v1 import inference_pb2 as ipb
from tests.support.mesh import LocalMesh

pytestmark = pytest.mark.slow

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"
# SmolLM2-135M is tiny: asked this way, greedily, it answers "The capital of France is Paris."
QUESTION = "What is the capital of France? Answer in one short English sentence."


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with LocalMesh(tmp_path_factory.mktemp("mesh")) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh):
    with StackmeshClient(mesh.url) as sm:
        deadline = time.monotonic() + 30  # discovery of the inline models is asynchronous
        while time.monotonic() < deadline and len(sm.list("models")) < 2:
            time.sleep(0.1)
        yield sm


def cli(mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stackmesh.cli", "--url", mesh.url, *args],
                          capture_output=True, text=True, timeout=120)


def test_inline_models_are_discovered_and_listed(client):
    models = {m.identifier: m for m in client.list("models")}
    assert f"llama-cpp/{CHAT_MODEL}" in models
    embed = models[f"sentence-transformers/{EMBED_MODEL}"]
    assert embed.metadata["embedding_dimension"] == 384


def test_providers_list_shows_health(mesh, client):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        providers = {p.provider_id: p for p in client.providers()}
        if all(p.health == 1 for p in providers.values()):
            break
        time.sleep(0.5)
    assert set(providers) == {"llama-cpp", "sentence-transformers"}
    assert all(p.health == 1 for p in providers.values()), providers
    out = cli(mesh, "providers", "list", "--json")
    assert out.returncode == 0, out.stderr
    assert {p["provider_id"] for p in json.loads(out.stdout)} == {"llama-cpp", "sentence-transformers"}


def test_chat_with_smollm2_answers_paris(client):
    answer = client.chat(CHAT_MODEL, QUESTION, max_tokens=24, temperature=0.0)
    assert "paris" in answer.lower()


def test_streaming_chat_arrives_token_by_token(client):
    request = client.chat_request(CHAT_MODEL, "Count from one to ten in words.", max_tokens=40, temperature=0.0)
    started = time.perf_counter()
    arrivals, pieces = [], []
    for chunk in client.inference.StreamChatCompletion(request, timeout=120):
        arrivals.append(time.perf_counter() - started)
        pieces.extend(c.delta.content for c in chunk.choices)
    text = "".join(pieces)
    assert len(arrivals) >= 10 and text.strip()
    # Not buffered: chunks arrive one by one as generated, not in one burst at the end.
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert sum(1 for gap in gaps if gap > 0.002) >= 5, arrivals


def test_cli_chat_streams_the_answer(mesh, client):
    out = cli(mesh, "chat", CHAT_MODEL, QUESTION, "--max-tokens", "24", "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert "paris" in out.stdout.lower()


def test_forced_tool_call_and_json_schema_output(client):
    from google.protobuf import struct_pb2

    params = struct_pb2.Struct()
    params.update({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    request = client.chat_request(CHAT_MODEL, "What is the weather in Paris?", max_tokens=40, temperature=0.0)
    request.tools.append(ipb.Tool(type="function", function=ipb.FunctionDefinition(
        name="get_weather", description="Weather of a city", parameters=params)))
    request.tool_choice.function_name = "get_weather"
    reply = client.inference.ChatCompletion(request, timeout=120)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    request = client.chat_request(CHAT_MODEL, "Give the capital of France as JSON.", max_tokens=40, temperature=0.0)
    request.response_format.type = "json_schema"
    request.response_format.json_schema.update(
        {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]})
    reply = client.inference.ChatCompletion(request, timeout=120)
    assert isinstance(json.loads(reply.choices[0].message.content)["capital"], str)


def test_embeddings_with_minilm(client, mesh):
    vectors = client.embed(EMBED_MODEL, ["hello", "a cat sits on the mat"])
    assert [len(v) for v in vectors] == [384, 384]
    norm = sum(x * x for x in vectors[0]) ** 0.5
    assert abs(norm - 1.0) < 1e-3
    out = cli(mesh, "embed", EMBED_MODEL, "hello", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)[0]) == 384


def test_custom_embedding_registration_like_the_readme(mesh, client):
    out = cli(mesh, "models", "register", "my-embed", "--provider", "sentence-transformers",
              "--provider-model-id", EMBED_MODEL, "--type", "embedding", "--metadata", '{"embedding_dimension": 384}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["identifier"] == "my-embed"
    first = client.embed("my-embed", ["hello"])[0]
    assert first == pytest.approx(client.embed(EMBED_MODEL, ["hello"])[0], abs=1e-6)
    out = cli(mesh, "models", "unregister", "my-embed")
    assert out.returncode == 0, out.stderr
    with pytest.raises(StackmeshClientError) as caught:
        client.embed("my-embed", ["hello"])
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_wrong_registered_dimension_is_an_error_not_silent(client):
    client.register_model("bad-dim", provider_id="sentence-transformers", provider_model_id=EMBED_MODEL,
                          model_type="embedding", metadata={"embedding_dimension": 512})
    try:
        with pytest.raises(StackmeshClientError) as caught:
            client.embed("bad-dim", ["hello"])
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.reason == "EMBEDDING_DIMENSION_MISMATCH"
        assert "512" in caught.value.message and "384" in caught.value.message
    finally:
        client.unregister("models", "bad-dim")


def test_bad_requests_get_the_right_status(client):
    with pytest.raises(StackmeshClientError) as caught:
        client.chat("no-such-model", "hi")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and "stackmesh models list" in caught.value.message
    with pytest.raises(StackmeshClientError) as caught:
        client.chat(EMBED_MODEL, "hi")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.reason == "WRONG_MODEL_TYPE"
    with pytest.raises(StackmeshClientError) as caught:
        client.embed(CHAT_MODEL, ["hi"])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(StackmeshClientError) as caught:
        client.chat(CHAT_MODEL, [])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(StackmeshClientError) as caught:  # a model that would need a download
        client.register_model("remote-st", provider_id="sentence-transformers", provider_model_id="BAAI/bge-small-en",
                              model_type="embedding", metadata={"embedding_dimension": 384})
        client.embed("remote-st", ["hi"])
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION and "never downloads" in caught.value.message
    client.unregister("models", "remote-st")


def test_deadline_of_the_caller_reaches_the_service(client):
    request = client.chat_request(CHAT_MODEL, "Write a long story about a dragon.", max_tokens=400)
    with pytest.raises(grpc.RpcError) as caught:
        client.inference.ChatCompletion(request, timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_grpcurl_lists_and_calls_everything_through_reflection(mesh, client):
    grpcurl = shutil.which("grpcurl", path=os.path.dirname(sys.executable))
    listed = subprocess.run([grpcurl, "-plaintext", mesh.url, "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {"stackmesh.inference.v1.InferenceService", "stackmesh.registry.v1.ModelsService",
            "stackmesh.registry.v1.ProvidersService", "grpc.health.v1.Health"} <= services
    assert "stackmesh.registry.v1.RegistryService" not in services  # internal only
    health = subprocess.run([grpcurl, "-plaintext", mesh.url, "grpc.health.v1.Health/Check"],
                            capture_output=True, text=True, timeout=60)
    assert '"SERVING"' in health.stdout
    embed = subprocess.run([grpcurl, "-plaintext", "-d", json.dumps({"model": EMBED_MODEL, "input": ["hi"]}), mesh.url,
                            "stackmesh.inference.v1.InferenceService/Embeddings"], capture_output=True, text=True, timeout=60)
    assert embed.returncode == 0, embed.stderr
    assert len(json.loads(embed.stdout)["data"][0]["embedding"]) == 384
