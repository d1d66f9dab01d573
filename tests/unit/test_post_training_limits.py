"""Job size and limits: the model shape read from the packaged SmolLM2 GGUF header, LoRA's
trainable parameters, the memory estimate, and the refusals with their hints."""

from __future__ import annotations

import dataclasses
import time

import pytest

from services.common.errors import InvalidArgument
from services.inference.providers.inline.llama_cpp.provider import packaged_smollm2_path
from services.common.errors import ResourceExhausted
from services.post_training.providers.base import BaseSource, TrainingSpec
from services.post_training.providers.inline.huggingface.limits import (GIB, check_limits, estimate_memory,
                                                                        lora_params, steps_per_epoch)
from services.post_training.providers.inline.huggingface.shapes import gguf_shape

SPEC = TrainingSpec(model="SmolLM2-135M-Instruct", base=BaseSource("SmolLM2-135M-Instruct", "llama-cpp", "gguf", "x"),
                    dataset_id="d", algorithm="lora", batch_size=4, max_seq_len=128)
LIMITS = dict(max_total_steps=2000, max_seq_length=1024, max_batch_size=32, max_memory_gb=8.0)


@pytest.fixture(scope="module")
def smollm2():
    started = time.perf_counter()
    shape = gguf_shape(packaged_smollm2_path())
    assert time.perf_counter() - started < 2.0  # read from the header, not by loading the model
    return shape


def test_the_gguf_header_gives_smollm2s_shape(smollm2):
    assert (smollm2.architecture, smollm2.params, smollm2.hidden, smollm2.layers) == ("llama", 134_515_008, 576, 30)
    assert (smollm2.heads, smollm2.kv_heads, smollm2.intermediate, smollm2.vocab) == (9, 3, 1536, 49152)


def test_lora_on_q_and_v_trains_a_third_of_a_percent(smollm2):
    trainable = lora_params(smollm2, 8, ("q_proj", "v_proj"))
    assert trainable == 460_800  # what peft reports for r=8 on SmolLM2's q_proj/v_proj
    assert trainable / smollm2.params == pytest.approx(0.0034, abs=0.0001)


def test_memory_estimate_grows_with_the_batch_and_the_sequence(smollm2):
    base = estimate_memory(smollm2, SPEC)
    assert 1.5 * GIB < base.total < 3.0 * GIB  # measured peak: about 2 GiB at batch 4, 128 tokens
    longer = estimate_memory(smollm2, dataclasses.replace(SPEC, max_seq_len=256))
    assert longer.activations > 2 * base.activations  # attention scores grow with the square
    full = estimate_memory(smollm2, dataclasses.replace(SPEC, algorithm="full"))
    assert full.optimizer == 12 * smollm2.params > 100 * base.optimizer
    checkpointed = estimate_memory(smollm2, SPEC, gradient_checkpointing=True)
    assert checkpointed.activations < base.activations / 5


def test_steps_count_batches_accumulation_and_the_per_epoch_cap():
    assert steps_per_epoch(16, SPEC) == 4
    assert steps_per_epoch(17, SPEC) == 5
    assert steps_per_epoch(16, dataclasses.replace(SPEC, gradient_accumulation_steps=3)) == 2
    assert steps_per_epoch(1000, dataclasses.replace(SPEC, max_steps_per_epoch=10)) == 10


def test_limits_refuse_with_the_limit_and_how_to_get_under_it(smollm2):
    assert check_limits(dataclasses.replace(SPEC, n_epochs=10), 16, smollm2, **LIMITS) == 40
    with pytest.raises(InvalidArgument, match=r"would run 5000 optimizer steps .* at most 2000 \(max_total_steps\): "
                                              r"lower n_epochs or set a smaller max_steps_per_epoch"):
        check_limits(dataclasses.replace(SPEC, n_epochs=1250), 16, smollm2, **LIMITS)
    with pytest.raises(InvalidArgument, match=r"batch_size 64 is over this provider's limit of 32"):
        check_limits(dataclasses.replace(SPEC, batch_size=64), 16, smollm2, **LIMITS)
    with pytest.raises(InvalidArgument, match=r"max_seq_len 4096 is over this provider's limit of 1024"):
        check_limits(dataclasses.replace(SPEC, max_seq_len=4096), 16, smollm2, **LIMITS)
    with pytest.raises(InvalidArgument, match=r"target_modules qkv_proj are not layers of a llama model"):
        check_limits(dataclasses.replace(SPEC, target_modules=("q_proj", "qkv_proj")), 16, smollm2, **LIMITS)
    with pytest.raises(ResourceExhausted, match=r"about \d+\.\d GiB .* over this provider's limit of 1 GiB "
                                                r"\(max_memory_gb\): lower batch_size or max_seq_len"):
        check_limits(SPEC, 16, smollm2, **{**LIMITS, "max_memory_gb": 1.0})


def test_a_transformers_folder_gives_its_shape_from_config_and_safetensors_headers(tmp_path):
    from transformers import AutoModelForCausalLM

    from services.post_training.providers.inline.huggingface.shapes import folder_shape
    from tests.fixtures.post_training.tiny_model import tiny_model_folder

    folder = tiny_model_folder(tmp_path / "tiny")
    shape = folder_shape(folder)
    assert (shape.architecture, shape.hidden, shape.layers, shape.heads, shape.kv_heads) == ("llama", 32, 2, 4, 2)
    assert shape.params == AutoModelForCausalLM.from_pretrained(folder).num_parameters()
