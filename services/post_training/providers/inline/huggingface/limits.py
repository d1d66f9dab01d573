"""How big a job is (optimizer steps, peak memory) and the provider's limits on it, checked before
the job is queued so an impossible request fails in milliseconds instead of hours later.

The memory estimate is for fp32 training on CPU, the worst case of a batch (every row padded to
``max_seq_len``):

    runtime      python + torch + transformers in the worker                       RUNTIME_BYTES
    weights      4 B x parameters
    optimizer    trainable parameters x 4 B x 3 (gradient, AdamW's two moments)
    activations  per layer  b x s x (34 h + 5 a s) x 2 B   (Korthikanti et al. 2022, fp16 -> fp32 doubles
                 it); with gradient checkpointing only each layer's input, plus one layer in full
    logits       b x s x vocab x 4 B x 3 (logits, log-softmax, their gradient)

Calibrated against the worker's measured peak RSS on SmolLM2-135M (bench/post_training_steps.py).
"""

from __future__ import annotations

import dataclasses
import math

from services.common.errors import InvalidArgument
from services.common.errors import ResourceExhausted
from services.post_training.providers.base import TrainingSpec
from services.post_training.providers.inline.huggingface.shapes import ModelShape

__all__ = ["MemoryEstimate", "estimate_memory", "steps_per_epoch", "total_steps", "check_limits", "lora_params",
           "LLAMA_MODULES", "RUNTIME_BYTES"]

GIB = 1024 ** 3
RUNTIME_BYTES = int(0.6 * GIB)
# Linear layers of llama-style decoders (llama, mistral, qwen2, SmolLM): what target_modules may name.
LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3", "smollm3")


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    runtime: int
    weights: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.runtime + self.weights + self.optimizer + self.activations + self.logits

    def describe(self) -> str:
        parts = [("weights", self.weights), ("gradients+optimizer", self.optimizer),
                 ("activations", self.activations + self.logits), ("runtime", self.runtime)]
        return ", ".join(f"{name} {value / GIB:.2f}" for name, value in parts)


def _module_dims(shape: ModelShape, module: str) -> tuple[int, int]:
    """(in, out) features of a llama-style linear layer."""
    kv = shape.kv_heads * shape.head_dim
    return {"q_proj": (shape.hidden, shape.hidden), "k_proj": (shape.hidden, kv), "v_proj": (shape.hidden, kv),
            "o_proj": (shape.hidden, shape.hidden), "gate_proj": (shape.hidden, shape.intermediate),
            "up_proj": (shape.hidden, shape.intermediate),
            "down_proj": (shape.intermediate, shape.hidden)}.get(module, (shape.hidden, shape.hidden))


def lora_params(shape: ModelShape, rank: int, modules: tuple[str, ...]) -> int:
    """Trainable parameters of a LoRA adapter: rank x (in + out) per targeted layer."""
    return shape.layers * sum(rank * sum(_module_dims(shape, m)) for m in modules)


def estimate_memory(shape: ModelShape, spec: TrainingSpec, gradient_checkpointing: bool = False) -> MemoryEstimate:
    b, s, h = spec.batch_size, spec.max_seq_len, shape.hidden
    trainable = lora_params(shape, spec.lora_rank, spec.target_modules) if spec.lora else shape.params
    per_layer = b * s * (34 * h + 5 * shape.heads * s) * 2
    if gradient_checkpointing:
        activations = shape.layers * b * s * h * 4 + per_layer
    else:
        activations = shape.layers * per_layer
    return MemoryEstimate(runtime=RUNTIME_BYTES, weights=4 * shape.params, optimizer=trainable * 12,
                          activations=activations, logits=b * s * shape.vocab * 12)


def steps_per_epoch(rows: int, spec: TrainingSpec) -> int:
    batches = math.ceil(rows / spec.batch_size)
    steps = math.ceil(batches / spec.gradient_accumulation_steps)
    return min(steps, spec.max_steps_per_epoch) if spec.max_steps_per_epoch else steps


def total_steps(rows: int, spec: TrainingSpec) -> int:
    return spec.n_epochs * steps_per_epoch(rows, spec)


def check_limits(spec: TrainingSpec, rows: int, shape: ModelShape, *, max_total_steps: int, max_seq_length: int,
                 max_batch_size: int, max_memory_gb: float, gradient_checkpointing: bool = False) -> int:
    """Raise when ``spec`` is over a limit, saying the limit and how to get under it; returns the
    job's total optimizer steps."""
    if spec.batch_size > max_batch_size:
        raise InvalidArgument(f"batch_size {spec.batch_size} is over this provider's limit of {max_batch_size} "
                              f"(max_batch_size); lower batch_size and raise gradient_accumulation_steps for the "
                              f"same effective batch", reason="BATCH_TOO_LARGE",
                              metadata={"batch_size": spec.batch_size, "limit": max_batch_size})
    if spec.max_seq_len > max_seq_length:
        raise InvalidArgument(f"max_seq_len {spec.max_seq_len} is over this provider's limit of {max_seq_length} "
                              f"(max_seq_length); lower max_seq_len (longer conversations are truncated)",
                              reason="SEQUENCE_TOO_LONG", metadata={"max_seq_len": spec.max_seq_len,
                                                                    "limit": max_seq_length})
    if spec.lora and shape.architecture in _LLAMA_FAMILY:
        unknown = [m for m in spec.target_modules if m not in LLAMA_MODULES]
        if unknown:
            raise InvalidArgument(f"lora.target_modules {', '.join(unknown)} are not layers of a "
                                  f"{shape.architecture} model; use some of {', '.join(LLAMA_MODULES)}",
                                  reason="BAD_TARGET_MODULES", metadata={"unknown": ",".join(unknown)})
    per_epoch = steps_per_epoch(rows, spec)
    steps = spec.n_epochs * per_epoch
    if steps > max_total_steps:
        raise InvalidArgument(f"the job would run {steps} optimizer steps ({spec.n_epochs} epochs x {per_epoch} steps: "
                              f"{rows} rows, batch_size {spec.batch_size}, gradient_accumulation_steps "
                              f"{spec.gradient_accumulation_steps}"
                              + (f", max_steps_per_epoch {spec.max_steps_per_epoch}" if spec.max_steps_per_epoch
                                 else "")
                              + f"); this provider runs at most {max_total_steps} (max_total_steps): lower n_epochs "
                                f"or set a smaller max_steps_per_epoch", reason="TOO_MANY_STEPS",
                              metadata={"steps": steps, "limit": max_total_steps})
    estimate = estimate_memory(shape, spec, gradient_checkpointing)
    if estimate.total > max_memory_gb * GIB:
        hint = "lower batch_size or max_seq_len" + ("" if spec.lora else ", use lora instead of full fine-tuning") \
            + ("" if gradient_checkpointing else ", or enable gradient_checkpointing in the provider config")
        raise ResourceExhausted(f"the job would need about {estimate.total / GIB:.1f} GiB of memory "
                                f"({estimate.describe()} GiB; batch_size {spec.batch_size}, max_seq_len "
                                f"{spec.max_seq_len}), over this provider's limit of {max_memory_gb:g} GiB "
                                f"(max_memory_gb): {hint}", reason="MEMORY_LIMIT",
                                metadata={"estimate_gib": f"{estimate.total / GIB:.2f}", "limit_gib": max_memory_gb})
    return steps
