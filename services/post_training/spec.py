"""A fine-tuning request as the caller gave it, and its defaults and value checks.

Proto3 numbers cannot be absent, so 0 means "the default" for every count and rate, exactly as a
Llama Stack user leaves a field out. Values that can never work (negative counts, a dropout of 1)
are refused here with INVALID_ARGUMENT naming the field; limits that depend on the provider (most
steps, largest batch, memory) are checked by the provider.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from services.common.errors import InvalidArgument

__all__ = ["FineTuneRequest", "Defaults", "normalized", "check_job_id", "JOB_ID_PATTERN"]

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclasses.dataclass(frozen=True)
class Defaults:
    """What 0 (or empty) means."""

    n_epochs: int = 1
    batch_size: int = 4
    max_seq_len: int = 256
    gradient_accumulation_steps: int = 1
    lr: float = 1e-4
    lora_rank: int = 8
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclasses.dataclass(frozen=True)
class FineTuneRequest:
    """``SupervisedFineTuneRequest`` in domain terms; ``algorithm`` is "lora", "full" or "" (not given)."""

    model: str
    dataset_id: str
    algorithm: str
    n_epochs: int = 0
    max_steps_per_epoch: int = 0
    gradient_accumulation_steps: int = 0
    batch_size: int = 0
    shuffle: bool = False
    max_seq_len: int = 0
    validation_dataset_id: str = ""
    lr: float = 0.0
    weight_decay: float = 0.0
    num_warmup_steps: int = 0
    checkpoint_every_steps: int = 0
    seed: int = 0
    lora_rank: int = 0
    lora_alpha: int = 0
    target_modules: tuple[str, ...] = ()
    lora_dropout: float = 0.0
    merge_output: bool = False
    output_model: str = ""
    job_id: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


def _non_negative(request: FineTuneRequest, *names: str) -> None:
    for name in names:
        if getattr(request, name) < 0:
            raise InvalidArgument(f"{name} must not be negative (0: the default)", reason="BAD_TRAINING_CONFIG",
                                  metadata={"field": name})


def check_job_id(job_id: str) -> None:
    """A job id names a folder: letters, digits, '.', '_', '-' only."""
    if job_id and not JOB_ID_PATTERN.match(job_id):
        raise InvalidArgument(f"job_id '{job_id}' is not valid: use 1-128 letters, digits, '.', '_' or '-', "
                              f"starting with a letter or digit", reason="BAD_JOB_ID", metadata={"job_id": job_id})


def normalized(request: FineTuneRequest, defaults: Defaults = Defaults()) -> dict[str, Any]:
    """The request's training fields with defaults applied (the keyword arguments of
    ``TrainingSpec`` that come from the request), or InvalidArgument."""
    if not request.model:
        raise InvalidArgument("model is required: the registered LLM to fine-tune (`stackmesh models list`)",
                              reason="MODEL_MISSING")
    if not request.dataset_id:
        raise InvalidArgument("training_config.data_config.dataset_id is required: a dataset of purpose "
                              "post-training/messages", reason="DATASET_MISSING")
    if request.algorithm not in ("lora", "full"):
        raise InvalidArgument("algorithm_config is required: lora {rank, alpha, target_modules} or full {}",
                              reason="ALGORITHM_MISSING")
    _non_negative(request, "n_epochs", "max_steps_per_epoch", "gradient_accumulation_steps", "batch_size",
                  "max_seq_len", "lr", "weight_decay", "num_warmup_steps", "checkpoint_every_steps", "lora_rank",
                  "lora_alpha", "lora_dropout")
    if not 0.0 <= request.lora_dropout < 1.0:
        raise InvalidArgument("lora.dropout must be in [0, 1)", reason="BAD_TRAINING_CONFIG",
                              metadata={"field": "lora_dropout"})
    check_job_id(request.job_id)
    rank = request.lora_rank or defaults.lora_rank
    modules = tuple(m.strip() for m in request.target_modules if m.strip()) or defaults.target_modules
    return {
        "model": request.model, "dataset_id": request.dataset_id, "algorithm": request.algorithm,
        "n_epochs": request.n_epochs or defaults.n_epochs, "max_steps_per_epoch": request.max_steps_per_epoch,
        "gradient_accumulation_steps": request.gradient_accumulation_steps or defaults.gradient_accumulation_steps,
        "batch_size": request.batch_size or defaults.batch_size, "shuffle": request.shuffle,
        "max_seq_len": request.max_seq_len or defaults.max_seq_len,
        "validation_dataset_id": request.validation_dataset_id, "lr": request.lr or defaults.lr,
        "weight_decay": request.weight_decay, "num_warmup_steps": request.num_warmup_steps,
        "checkpoint_every_steps": request.checkpoint_every_steps, "seed": request.seed,
        "lora_rank": rank, "lora_alpha": request.lora_alpha or 2 * rank, "target_modules": modules,
        "lora_dropout": request.lora_dropout, "merge_output": request.merge_output or request.algorithm == "full",
        "output_model": request.output_model, "metadata": dict(request.metadata), "config": dict(request.config),
    }
