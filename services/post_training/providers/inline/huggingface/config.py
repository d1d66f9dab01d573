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
    omp_wait_policy: Literal["PASSIVE", "ACTIVE"] = Field(
        default="PASSIVE", description="OpenMP wait policy of the training worker (unless OMP_WAIT_POLICY is set). "
        "Measured on 2 cores (bench/post_training_steps.py --compare-omp): an ACTIVE (spinning) step took 0.8-1.1x "
        "the PASSIVE time on an idle host, 1.4-1.6x with one busy process beside it (and spinning threads starve the "
        "services beside them); PASSIVE suits a host shared with the mesh, ACTIVE a dedicated trainer.")
    # --- jobs across restarts and replicas
    train_jobs: bool = Field(default=True, description="Whether this replica trains jobs. False: it accepts, lists, "
                             "watches and cancels jobs in the shared store while replicas with true train them (a "
                             "small front replica beside a big trainer).")
    heartbeat_seconds: float = Field(default=2.0, gt=0, description="How often a replica renews its claim on the "
                                     "job it runs, and looks for queued or orphaned jobs to take.")
    lease_seconds: float = Field(default=30.0, gt=0, description="A claim not renewed for this long is orphaned "
                                 "(its replica died or hangs) and another replica resumes the job from its last "
                                 "checkpoint. A claim of a dead process on the same host is taken over at once.")
    max_attempts: int = Field(default=3, ge=1, description="A job whose service crashed this many times while "
                              "running it is marked FAILED instead of resumed again.")
    cancel_grace_seconds: float = Field(default=3.0, ge=0, description="After SIGTERM, how long a cancelled job's "
                                        "worker process gets before SIGKILL.")
    datasetio_timeout_seconds: float = Field(default=60.0, gt=0, description="Limit of one IterRows call.")
    unavailable_grace_seconds: float = Field(default=30.0, ge=0, description="How long a job starting retries a "
                                             "datasetio that is UNAVAILABLE before it fails naming it (rides out "
                                             "a rolling restart of datasetio).")
    registry_timeout_seconds: float = Field(default=10.0, gt=0, description="Limit of the RegisterModel call that "
                                            "registers a completed job's output model.")
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
