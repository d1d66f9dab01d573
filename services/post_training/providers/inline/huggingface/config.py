"""Config of ``inline::huggingface`` post-training: Llama Stack's keys, plus stackmesh's limits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.storage import KVSTORE_DESCRIPTION, PERSISTENCE_DESCRIPTION, StoreRef

__all__ = ["HuggingFacePostTrainingConfig"]


class HuggingFacePostTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # --- where files go
    data_dir: str | None = Field(default=None, description="Folder of the jobs database, converted base models, "
                                 "checkpoints and adapters; default: the folder kvstore/persistence point at, else "
                                 "post_training/<provider_id>/ beside the registry database. The inference service "
                                 "must see the same folder to serve tuned models.")
    persistence: StoreRef | None = Field(default=None, description=PERSISTENCE_DESCRIPTION)
    kvstore: dict[str, Any] | None = Field(default=None, description=KVSTORE_DESCRIPTION)
    # --- where results are served
    inference_provider_id: str | None = Field(default=None, description="The inline::transformers inference "
                                              "provider that serves tuned models; default: the only one configured.")
    # --- limits (a request beyond them is refused before it is queued)
    max_total_steps: int = Field(default=2000, ge=1, description="Most optimizer steps one job may run.")
    max_seq_length: int = Field(default=1024, ge=16, description="Longest max_seq_len a job may ask for "
                                "(Llama Stack's key; the job's own default is 256).")
    max_batch_size: int = Field(default=32, ge=1, description="Largest batch_size a job may ask for.")
    max_memory_gb: float = Field(default=8.0, gt=0, description="Refuse a job whose estimated peak memory "
                                 "(weights, gradients, optimizer state, activations) exceeds this.")
    max_queued_jobs: int = Field(default=16, ge=1, description="Jobs waiting beyond the running one.")
    torch_threads: int | None = Field(default=None, ge=1, description="Threads the trainer uses (default: all "
                                      "cores).")
    # --- Llama Stack's HuggingFacePostTrainingConfig keys, accepted so its configs load
    device: str = Field(default="cpu", description="Only cpu is supported here.")
    distributed_backend: Literal["fsdp", "deepspeed"] | None = Field(default=None, description="Not supported; "
                                                                     "must be null.")
    checkpoint_format: Literal["huggingface", "full_state"] = Field(default="huggingface",
                                                                    description="Checkpoints are saved in "
                                                                    "transformers/peft format.")
    chat_template: str | None = Field(default=None, description="Unused: the base model's own chat template "
                                      "formats conversations.")
    model_specific_config: dict[str, Any] = Field(default_factory=dict, description="Unused.")
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for activation memory.")
    save_total_limit: int = Field(default=3, ge=1, description="Checkpoints kept per job (older ones deleted).")
    logging_steps: int = Field(default=1, ge=1, description="Log the loss every N optimizer steps.")
    warmup_ratio: float = Field(default=0.0, ge=0, le=1, description="Linear warm-up over this share of the "
                                "steps when the request gives no num_warmup_steps.")
    weight_decay: float = Field(default=0.0, ge=0, description="Default AdamW weight decay.")
    dataloader_num_workers: int = Field(default=0, ge=0, description="Unused: rows are tokenized up front.")
    dataloader_pin_memory: bool = Field(default=False, description="Unused on CPU.")
    dpo_beta: float = Field(default=0.1, description="Unused: DPO is not implemented.")
    use_reference_model: bool = Field(default=True, description="Unused: DPO is not implemented.")
    dpo_loss_type: str = Field(default="sigmoid", description="Unused: DPO is not implemented.")
    dpo_output_dir: str | None = Field(default=None, description="Unused: DPO is not implemented.")
