"""safety in the whole mesh, as real processes on 127.0.0.1, called through the gateway like a user:
registry + inference (SmolLM2 via llama.cpp, MiniLM) + safety (llama-guard, code-scanner) + gateway.

SmolLM2-135M is no guard model (it echoes the category list), so the llama-guard test asserts the
plumbing — the prompt reached the shield's model and its raw answer came back and was read by the
parser — not the model's judgement."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import json_format

from services.safety.providers.base import Message
from services.safety.providers.inline.llama_guard.prompt import build_prompt
from services.safety.providers.inline.llama_guard.verdict import decide, parse_verdict
from stackmesh.client import StackmeshClient, StackmeshClientError
from stackmesh.inference.v1 import inference_pb2 as ipb
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from stackmesh.safety.v1 import safety_pb2 as spb, safety_pb2_grpc
from tests.support.mesh import DEFAULT_PROVIDERS, LocalMesh

pytestmark = pytest.mark.slow

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBED_MODEL = "all-MiniLM-L6-v2"
BOMB = "How do I make a bomb?"
SHELL = "import subprocess\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n"
HARMLESS = "def add(a, b):\n    return a + b\n"
LEVELS = {spb.VIOLATION_LEVEL_INFO: "INFO", spb.VIOLATION_LEVEL_WARN: "WARN", spb.VIOLATION_LEVEL_ERROR: "ERROR"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    providers = {
        "inference": DEFAULT_PROVIDERS["inference"],
        "safety": [{"provider_id": "llama-guard", "provider_type": "inline::llama-guard", "config": {}},
                   {"provider_id": "code-scanner", "provider_type": "inline::code-scanner", "config": {}}],
    }
    with LocalMesh(tmp_path_factory.mktemp("mesh"), providers=providers) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh):
    with StackmeshClient(mesh.url) as sm:
        deadline = time.monotonic() + 60  # discovery of the inline models is asynchronous
        while time.monotonic() < deadline and len(sm.list("models")) < 2:
            time.sleep(0.1)
        register_shield(sm, "guard", "llama-guard", CHAT_MODEL)
        register_shield(sm, "code", "code-scanner")
        yield sm


def call(fn, request, **kwargs):
    try:
        return fn(request, timeout=kwargs.pop("timeout", 120), **kwargs)
    except grpc.RpcError as err:
        raise StackmeshClientError.from_rpc_error(err) from None


def register_shield(client: StackmeshClient, shield_id: str, provider_id: str, model: str = ""):
    stub = registry_pb2_grpc.ShieldsServiceStub(client.channel)
    return call(stub.RegisterShield, rpb.RegisterShieldRequest(shield_id=shield_id, provider_id=provider_id,
                                                                provider_shield_id=model)).shield


def safety(client: StackmeshClient) -> safety_pb2_grpc.SafetyServiceStub:
    return safety_pb2_grpc.SafetyServiceStub(client.channel)


def run_shield(client: StackmeshClient, shield_id: str, *messages: tuple[str, str]) -> spb.RunShieldResponse:
    request = spb.RunShieldRequest(shield_id=shield_id,
                                   messages=[ipb.ChatMessage(role=r, content=c) for r, c in messages])
    return call(safety(client).RunShield, request)


def expect_error(code: grpc.StatusCode, fn, *args) -> StackmeshClientError:
    with pytest.raises(StackmeshClientError) as caught:
        fn(*args)
    assert caught.value.code == code, caught.value
    return caught.value


def test_llama_guard_asks_the_shields_model_and_reads_its_answer(client):
    started = time.perf_counter()
    reply = run_shield(client, "guard", ("user", BOMB))
    print(f"\nRunShield guard (SmolLM2 through the mesh): {time.perf_counter() - started:.2f} s")
    # The same prompt, asked directly: greedy decoding gives the same answer.
    direct = call(client.inference.ChatCompletion, ipb.ChatCompletionRequest(
        model=CHAT_MODEL, messages=[ipb.ChatMessage(role="user", content=build_prompt([Message("user", BOMB)]))],
        sampling=ipb.SamplingParams(temperature=0.0, max_tokens=48))).choices[0].message.content
    expected = decide(parse_verdict(direct))
    if expected is None:
        assert not reply.HasField("violation"), reply
        return
    violation = reply.violation
    raw = violation.metadata["raw_answer"]
    assert raw == direct
    assert decide(parse_verdict(raw)) == expected  # the verdict is the parser's reading of that answer
    assert (LEVELS[violation.violation_level], list(violation.categories)) == (expected.level.name,
                                                                                expected.categories)
    assert violation.user_message == expected.user_message == "I can't answer that. Can I help with something else?"
    assert violation.metadata["model"] == CHAT_MODEL and violation.metadata["verdict"] == expected.metadata["verdict"]


def test_code_scanner_flags_shell_true_and_passes_harmless_code(client):
    started = time.perf_counter()
    reply = run_shield(client, "code", ("user", "Write a runner."), ("assistant", f"Here:\n```python\n{SHELL}```"))
    print(f"\nRunShield code (CodeShield + semgrep): {time.perf_counter() - started:.2f} s")
    violation = reply.violation
    assert LEVELS[violation.violation_level] == "WARN" and list(violation.categories) == ["CWE-78"]
    assert violation.user_message == "Sorry, I found security concerns in the code."
    [finding] = violation.metadata["findings"]
    assert finding["rule"] == "insecure-subprocess-using-shell" and finding["language"] == "python"
    assert finding["message_index"] == 1
    assert not run_shield(client, "code", ("assistant", HARMLESS)).HasField("violation")


def test_moderation_in_openai_shape(client):
    reply = call(safety(client).RunModeration, spb.RunModerationRequest(model="code", input=[SHELL, HARMLESS]))
    assert reply.id.startswith("modr-") and reply.model == "code" and len(reply.results) == 2
    bad, good = reply.results
    assert bad.flagged and list(bad.flagged_by) == ["code"] and dict(bad.categories) == {"CWE-78": True}
    assert dict(bad.category_scores) == {"CWE-78": 1.0} and bad.user_message
    assert bad.metadata["shields"]["code"]["level"] == "WARN"
    assert not good.flagged and not good.flagged_by and not good.categories and not good.user_message

    # Empty model: every registered shield of the service, each contributing its categories.
    reply = call(safety(client).RunModeration, spb.RunModerationRequest(input=[BOMB]))
    assert reply.model == "code,guard" and len(reply.results) == 1
    [result] = reply.results
    assert {"violent_crimes", "indiscriminate_weapons", "code_interpreter_abuse"} <= set(result.categories)
    guard = json_format.MessageToDict(result.metadata).get("shields", {}).get("guard")
    assert ("guard" in result.flagged_by) == (guard is not None and guard["level"] != "INFO")
    assert result.flagged == bool(result.flagged_by)
    if guard is not None:
        assert "raw_answer" in guard["metadata"]


def test_unknown_shield_is_not_found(client):
    err = expect_error(grpc.StatusCode.NOT_FOUND, run_shield, client, "no-such-shield", ("user", "hi"))
    assert "no-such-shield" in err.message and "stackmesh shields list" in err.message
    expect_error(grpc.StatusCode.NOT_FOUND, call, safety(client).RunModeration,
                 spb.RunModerationRequest(model="no-such-shield", input=["hi"]))


def test_registering_a_guard_shield_needs_a_registered_llm(client):
    # The registry's rule: provider_shield_id must name a registered LLM.
    missing = expect_error(grpc.StatusCode.NOT_FOUND, register_shield, client, "bad-guard", "llama-guard",
                           "no-such-model")
    assert "no-such-model" in missing.message
    embedding = expect_error(grpc.StatusCode.INVALID_ARGUMENT, register_shield, client, "bad-guard", "llama-guard",
                             EMBED_MODEL)
    assert EMBED_MODEL in embedding.message
    assert "bad-guard" not in {s.identifier for s in client.list("shields")}


def expect_shield_error(client: StackmeshClient, shield_id: str, reason: str) -> StackmeshClientError:
    """The error ``shield_id`` answers with once a registry change has reached the services' caches (watch)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            run_shield(client, shield_id, ("user", "hi"))
        except StackmeshClientError as err:
            if err.reason == reason or time.monotonic() > deadline:
                return err
        assert time.monotonic() < deadline, f"shield '{shield_id}' still answered"
        time.sleep(0.1)


def test_a_guard_whose_model_was_unregistered_or_replaced_says_so(client):
    client.register_model("guard-model", provider_id="llama-cpp", provider_model_id=CHAT_MODEL)
    register_shield(client, "temp-guard", "llama-guard", "guard-model")
    try:
        client.unregister("models", "guard-model")
        err = expect_shield_error(client, "temp-guard", "SHIELD_MODEL_NOT_FOUND")
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "SHIELD_MODEL_NOT_FOUND", err
        assert "guard-model" in err.message and "no longer registered" in err.message
        # the same id registered again, as an embedding model
        client.register_model("guard-model", provider_id="sentence-transformers", provider_model_id=EMBED_MODEL,
                              model_type="embedding", metadata={"embedding_dimension": 384})
        err = expect_shield_error(client, "temp-guard", "SHIELD_MODEL_WRONG_TYPE")
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "SHIELD_MODEL_WRONG_TYPE", err
        assert "embedding model" in err.message
    finally:
        client.unregister("shields", "temp-guard")
        client.unregister("models", "guard-model")


def test_inference_down_is_unavailable_naming_it(client, mesh):
    # Last in this module: it stops the inference service.
    for process in mesh.inference:
        process.stop()
    err = expect_error(grpc.StatusCode.UNAVAILABLE, run_shield, client, "guard", ("user", "hi"))
    assert "inference service" in err.message and err.reason == "INFERENCE_UNAVAILABLE"
    assert not run_shield(client, "code", ("assistant", HARMLESS)).HasField("violation")  # the other shield still works
