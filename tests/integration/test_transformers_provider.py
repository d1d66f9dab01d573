"""inline::transformers serving tuned models, with real weights built in tmp dirs.

The packaged SmolLM2 GGUF is converted once per session to a transformers folder (the base a
post_training job starts from); LoRA adapters over it are made with peft and seeded random B weights
(they change the answers, no training needed); a merged folder is base + adapter 1. Generations are
short (2 shared cores): greedy, at most 12 new tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import shutil
import time

import grpc
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, Unimplemented
from services.inference.providers.base import ModelTarget
from services.inference.providers.inline.transformers.config import TransformersConfig
from services.inference.providers.inline.transformers.provider import TransformersProvider
from tests.fixtures.transformers.build_models import convert_packaged_gguf, make_lora_adapter, merge_adapter

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
MAX_TOKENS = 12


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("tuned")
    base = convert_packaged_gguf(root / "base")
    # Random LoRA weights change this answer only for some seeds and scales (many leave "Paris" on top);
    # these two give, greedily, two different answers, both unlike the base's (pinned torch: deterministic).
    adapter1 = make_lora_adapter(base, root / "adapter1", seed=1, scale=0.05)
    adapter2 = make_lora_adapter(base, root / "adapter2", seed=3, scale=0.2, with_tokenizer=True)
    return {"base": base, "adapter1": adapter1, "adapter2": adapter2,
            "merged": merge_adapter(base, adapter1, root / "merged")}


def target(path: pathlib.Path | str, base: pathlib.Path | None = None, name: str = "tuned") -> ModelTarget:
    metadata = {"base_path": str(base), "post_training_job": "job-1"} if base else {}
    return ModelTarget(identifier=name, provider_model_id=str(path), model_type="llm", metadata=metadata)


def chat(question: str = QUESTION, **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}], "max_tokens": MAX_TOKENS, "temperature": 0.0,
            **extra}


async def answer(provider: TransformersProvider, model: ModelTarget, **extra) -> str:
    reply = await provider.chat_completion(model, chat(**extra))
    return reply["choices"][0]["message"]["content"]


@pytest.fixture
async def provider() -> TransformersProvider:
    served = TransformersProvider("transformers", TransformersConfig(), {})
    await served.initialize()
    yield served
    await served.shutdown()


def greedy_reference(folder: pathlib.Path, adapter: pathlib.Path | None = None) -> str:
    """The same question answered by plain transformers (+ peft), greedy: what serving must reproduce."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                           tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


async def test_base_chat_equals_greedy_transformers(provider, models):
    reply = await provider.chat_completion(target(models["base"]), chat())
    text = reply["choices"][0]["message"]["content"]
    assert "paris" in text.lower()
    assert text == greedy_reference(models["base"])
    assert reply["object"] == "chat.completion" and reply["model"] == "tuned"
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply["choices"][0]["finish_reason"] == "stop"  # ended on <|im_end|> before the limit


async def test_adapter_answer_differs_from_base_and_equals_peft(provider, models):
    tuned = await answer(provider, target(models["adapter1"], models["base"]))
    assert tuned != await answer(provider, target(models["base"]))
    assert tuned == greedy_reference(models["base"], models["adapter1"])


async def test_two_adapters_share_one_base_load(provider, models):
    base = models["base"]
    plain = await answer(provider, target(base))
    first = await answer(provider, target(models["adapter1"], base))
    second = await answer(provider, target(models["adapter2"]))  # base from the adapter's own config
    assert len({plain, first, second}) == 3, (plain, first, second)
    assert provider.bases.loads == 1 and provider.bases.loaded() == [base.resolve()]
    loaded = (await provider.bases.get(base.resolve()))
    assert len(loaded.adapters) == 2
    assert loaded.tokenizer_for(models["adapter2"].resolve()) is not loaded.tokenizer  # saved with the adapter
    # One copy of the base weights: the peft model wraps the very tensors the base was loaded into.
    embed = loaded.model.get_input_embeddings().weight
    assert loaded.peft.get_base_model().get_input_embeddings().weight.data_ptr() == embed.data_ptr()
    # Switching back and forth never leaks one adapter into another, nor into the plain base.
    assert await answer(provider, target(models["adapter1"], base)) == first
    assert await answer(provider, target(base)) == plain
    assert await answer(provider, target(models["adapter2"], base)) == second


async def test_concurrent_requests_on_one_base_each_get_their_own_answer(provider, models):
    base = models["base"]
    targets = [target(base), target(models["adapter1"], base), target(models["adapter2"], base)]
    alone = [await answer(provider, t) for t in targets]
    together = await asyncio.gather(*(answer(provider, t) for t in targets * 2))
    assert list(together) == alone * 2
    assert provider.bases.loads == 1


async def test_streaming_matches_unary_with_usage_and_finish_reason(provider, models):
    model = target(models["adapter2"], models["base"])
    unary = await provider.chat_completion(model, chat())
    chunks = []
    async with contextlib.aclosing(provider.stream_chat_completion(model, chat())) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(chunks) >= 4 and text == unary["choices"][0]["message"]["content"]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == unary["choices"][0]["finish_reason"]
    assert last["usage"] == unary["usage"]


async def test_stop_strings_are_cut_streamed_or_not_and_length_is_reported(provider, models):
    model = target(models["base"])
    full = await answer(provider, model)
    assert "France" in full
    reply = await provider.chat_completion(model, chat(stop=["France"]))
    assert reply["choices"][0]["message"]["content"] == full[:full.index("France")]
    assert reply["choices"][0]["finish_reason"] == "stop"
    pieces = [c["choices"][0]["delta"].get("content") or ""
              async for c in provider.stream_chat_completion(model, chat(stop=["France"]))]
    assert "".join(pieces) == full[:full.index("France")]
    short = await provider.chat_completion(model, chat(max_tokens=3))
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 3


async def test_raw_completion(provider, models):
    reply = await provider.completion(target(models["base"]), {"prompt": "The capital of France is",
                                                              "max_tokens": 4, "temperature": 0.0})
    assert reply["object"] == "text_completion" and "paris" in reply["choices"][0]["text"].lower()
    assert reply["choices"][0]["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 4


async def test_merged_folder_serves_like_base_plus_adapter(provider, models):
    merged = await answer(provider, target(models["merged"]))
    assert merged == await answer(provider, target(models["adapter1"], models["base"]))


async def test_missing_folders_are_failed_precondition(provider, models, tmp_path):
    with pytest.raises(FailedPrecondition) as err:
        await answer(provider, target(tmp_path / "nowhere"))
    assert err.value.reason == "MODEL_NOT_LOCAL" and str(tmp_path / "nowhere") in err.value.message
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    config = json.loads((models["adapter1"] / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "HuggingFaceTB/x"}))
    with pytest.raises(FailedPrecondition) as err:
        await answer(provider, target(orphan))
    assert err.value.reason == "MODEL_NOT_LOCAL" and "base_path" in err.value.message


async def test_not_an_llm_and_corrupt_adapter_are_failed_precondition(provider, models, tmp_path):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(FailedPrecondition) as err:
        await answer(provider, target(encoder))
    assert str(encoder) in err.value.message and "causal" in err.value.message
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_bytes((models["adapter1"] / "adapter_config.json").read_bytes())
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00not safetensors")
    plain = await answer(provider, target(models["base"]))
    with pytest.raises(FailedPrecondition) as err:
        await answer(provider, target(corrupt, models["base"]))
    assert err.value.reason == "ADAPTER_INVALID" and str(corrupt) in err.value.message
    with pytest.raises(FailedPrecondition, match="ADAPTER_INVALID|cannot be loaded"):
        async for _ in provider.stream_chat_completion(target(corrupt, models["base"]), chat()):
            pass
    assert await answer(provider, target(models["base"])) == plain  # checked before touching the shared base
    assert provider.bases.loads == 1


async def test_adapter_that_does_not_fit_its_base_fails_and_the_base_is_reloaded(provider, models, tmp_path):
    base = models["base"]
    plain = await answer(provider, target(base))
    tuned = await answer(provider, target(models["adapter1"], base))
    misfit = tmp_path / "misfit"  # a valid LoRA adapter for another architecture (GPT-2 module names)
    misfit.mkdir()
    config = json.loads((models["adapter1"] / "adapter_config.json").read_text())
    (misfit / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["c_attn"]}))
    shutil.copy(models["adapter1"] / "adapter_model.safetensors", misfit)
    with pytest.raises(FailedPrecondition) as err:
        await answer(provider, target(misfit, base))
    assert err.value.reason == "ADAPTER_INVALID" and "cannot be applied" in err.value.message
    assert str(misfit) in err.value.message
    # The injection may have half-modified the shared model: it is dropped and read again, answers unchanged.
    assert await answer(provider, target(models["adapter1"], base)) == tuned
    assert await answer(provider, target(base)) == plain
    assert provider.bases.loads == 2


async def test_fields_it_cannot_honour_are_refused(provider, models):
    model = target(models["base"])
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with pytest.raises(Unimplemented, match="tools"):
        await answer(provider, model, tools=[tool], tool_choice="auto")
    with pytest.raises(Unimplemented, match="response_format"):
        await answer(provider, model, response_format={"type": "json_object"})
    with pytest.raises(InvalidArgument, match="temperature"):
        await answer(provider, model, temperature=7)
    assert "paris" in (await answer(provider, model, tools=[tool], tool_choice="none")).lower()
    assert await provider.list_models() is None  # registered by post_training, never discovered


async def test_a_caller_leaving_stops_its_generation_and_frees_the_base(provider, models):
    model = target(models["base"])
    long = chat("Count from one to a hundred in words.", max_tokens=256)  # >= 10 s here if it ran to the end
    stream = provider.stream_chat_completion(model, long)
    async with contextlib.aclosing(stream):
        async for _ in stream:
            break  # leave after the first chunk
    unary = asyncio.create_task(provider.chat_completion(model, long))
    await asyncio.sleep(0.5)
    unary.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unary
    started = time.perf_counter()
    assert "paris" in (await answer(provider, model)).lower()
    assert time.perf_counter() - started < 8  # neither abandoned generation kept the base's lock


async def test_seeded_sampling_repeats(provider, models):
    model = target(models["base"])
    first = await answer(provider, model, temperature=1.2, top_p=0.95, seed=7)
    assert first == await answer(provider, model, temperature=1.2, top_p=0.95, seed=7)


async def test_least_recently_used_base_is_evicted(models):
    served = TransformersProvider("transformers", TransformersConfig(max_loaded_bases=1), {})
    await served.initialize()
    await served.completion(target(models["base"]), {"prompt": "Hello", "max_tokens": 1})
    await served.completion(target(models["merged"]), {"prompt": "Hello", "max_tokens": 1})
    assert served.bases.loaded() == [models["merged"].resolve()] and served.bases.loads == 2
    await served.completion(target(models["adapter1"], models["base"]), {"prompt": "Hello", "max_tokens": 1})
    assert served.bases.loaded() == [models["base"].resolve()] and served.bases.loads == 3


def test_mesh_serves_a_tuned_model_registered_through_the_gateway(models, tmp_path):
    """The provider inside a real inference process, the model registered as post_training does."""
    from stackmesh.client import StackmeshClient, StackmeshClientError
    from tests.support.mesh import LocalMesh

    providers = {"inference": [{"provider_id": "transformers", "provider_type": "inline::transformers",
                                "config": {"torch_threads": 2, "max_new_tokens": 32}}]}
    with LocalMesh(tmp_path, providers=providers) as mesh, StackmeshClient(mesh.url) as client:
        client.register_model("smol-tuned", provider_id="transformers", provider_model_id=str(models["adapter1"]),
                              metadata={"post_training_job": "job-1", "base_model": "SmolLM2-135M-Instruct",
                                        "base_path": str(models["base"]),
                                        "adapter_path": str(models["adapter1"]),
                                        "post_training_provider": "huggingface"})
        client.register_model("smol-base", provider_id="transformers", provider_model_id=str(models["base"]))
        tuned = client.chat("smol-tuned", QUESTION, max_tokens=MAX_TOKENS, temperature=0.0)
        assert tuned == greedy_reference(models["base"], models["adapter1"])
        streamed = "".join(client.stream_chat("smol-base", QUESTION, max_tokens=MAX_TOKENS, temperature=0.0))
        assert streamed == greedy_reference(models["base"])
        client.register_model("gone", provider_id="transformers", provider_model_id=str(tmp_path / "gone"))
        with pytest.raises(StackmeshClientError) as err:
            client.chat("gone", QUESTION, max_tokens=4)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and err.value.reason == "MODEL_NOT_LOCAL"
        assert str(tmp_path / "gone") in err.value.message
