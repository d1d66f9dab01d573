"""Client calls for fine-tuning models (post_training jobs). Mixed into ``StackmeshClient``."""

from __future__ import annotations

from typing import Any, Iterator

import grpc
from google.protobuf import struct_pb2

from stackmesh.client_errors import StackmeshClientError, call
from stackmesh.post_training.v1 import post_training_pb2 as ppb, post_training_pb2_grpc

__all__ = ["TrainingCalls", "TRAINING_JOB_STATES", "FINAL_TRAINING_STATES"]

TRAINING_JOB_STATES = {ppb.JOB_STATE_SCHEDULED: "scheduled", ppb.JOB_STATE_IN_PROGRESS: "in_progress",
                       ppb.JOB_STATE_COMPLETED: "completed", ppb.JOB_STATE_FAILED: "failed",
                       ppb.JOB_STATE_CANCELLED: "cancelled"}
FINAL_TRAINING_STATES = (ppb.JOB_STATE_COMPLETED, ppb.JOB_STATE_FAILED, ppb.JOB_STATE_CANCELLED)


class TrainingCalls:
    channel: grpc.Channel
    timeout: float

    def _init_training_stubs(self) -> None:
        self.post_training = post_training_pb2_grpc.PostTrainingServiceStub(self.channel)

    @staticmethod
    def sft_request(model: str, dataset_id: str, *, epochs: int = 1, max_steps_per_epoch: int = 0,
                    batch_size: int = 4, lr: float = 1e-3, weight_decay: float = 0.0, max_seq_len: int = 0,
                    gradient_accumulation_steps: int = 1, lora_rank: int | None = 8, lora_alpha: int = 16,
                    target_modules: list[str] | None = None, dropout: float = 0.0, merge_output: bool = False,
                    output_model: str = "", shuffle: bool = True, seed: int = 0, job_id: str = "",
                    validation_dataset_id: str = "", checkpoint_every_steps: int = 0,
                    metadata: dict[str, Any] | None = None) -> ppb.SupervisedFineTuneRequest:
        """A request in Llama Stack's shape; ``lora_rank=None`` means full fine-tuning."""
        training = ppb.TrainingConfig(
            n_epochs=epochs, max_steps_per_epoch=max_steps_per_epoch,
            gradient_accumulation_steps=gradient_accumulation_steps, seed=seed,
            checkpoint_every_steps=checkpoint_every_steps,
            data_config=ppb.DataConfig(dataset_id=dataset_id, batch_size=batch_size, shuffle=shuffle,
                                       validation_dataset_id=validation_dataset_id, max_seq_len=max_seq_len),
            optimizer_config=ppb.OptimizerConfig(lr=lr, weight_decay=weight_decay))
        meta = struct_pb2.Struct()
        meta.update(metadata or {})
        request = ppb.SupervisedFineTuneRequest(model=model, training_config=training, output_model=output_model,
                                                job_id=job_id, metadata=meta)
        if lora_rank is None:
            request.full.SetInParent()
        else:
            request.lora.CopyFrom(ppb.LoraConfig(rank=lora_rank, alpha=lora_alpha, target_modules=target_modules or [],
                                                 dropout=dropout, merge_output=merge_output))
        return request

    def supervised_fine_tune(self, request: ppb.SupervisedFineTuneRequest) -> ppb.Job:
        return call(self.post_training.SupervisedFineTune, request, timeout=self.timeout).job

    def training_job(self, job_id: str) -> ppb.Job:
        return call(self.post_training.JobStatus, ppb.JobStatusRequest(job_id=job_id), timeout=self.timeout).job

    def training_jobs(self) -> list[ppb.Job]:
        out, token = [], ""
        while True:
            reply = call(self.post_training.ListJobs, ppb.ListJobsRequest(page_token=token), timeout=self.timeout)
            out.extend(reply.jobs)
            token = reply.next_page_token
            if not token:
                return out

    def training_artifacts(self, job_id: str) -> ppb.JobArtifactsResponse:
        return call(self.post_training.JobArtifacts, ppb.JobArtifactsRequest(job_id=job_id), timeout=self.timeout)

    def cancel_training(self, job_id: str) -> ppb.Job:
        return call(self.post_training.JobCancel, ppb.JobCancelRequest(job_id=job_id), timeout=self.timeout).job

    def delete_training_artifacts(self, job_id: str) -> int:
        return call(self.post_training.DeleteJobArtifacts, ppb.DeleteJobArtifactsRequest(job_id=job_id),
                    timeout=self.timeout).bytes_freed

    def watch_training(self, job_id: str, timeout: float | None = None) -> Iterator[ppb.Job]:
        """The job now, then at every logged step until it ends."""
        stream = self.post_training.WatchJob(ppb.WatchJobRequest(job_id=job_id), timeout=timeout)
        try:
            for reply in stream:
                yield reply.job
        except grpc.RpcError as err:
            raise StackmeshClientError.from_rpc_error(err) from None
