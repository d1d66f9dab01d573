"""PostTrainingService: proto <-> domain around the core; no training or job logic here."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from services.common.protoutil import struct, timestamp
from services.post_training.core import PostTrainingCore
from services.post_training.providers.base import Artifacts, JobInfo, JobState
from services.post_training.spec import FineTuneRequest
from stackmesh.post_training.v1 import post_training_pb2 as pb, post_training_pb2_grpc

__all__ = ["PostTrainingServicer", "job_proto", "fine_tune_request"]

_STATES = {JobState.SCHEDULED: pb.JOB_STATE_SCHEDULED, JobState.IN_PROGRESS: pb.JOB_STATE_IN_PROGRESS,
           JobState.COMPLETED: pb.JOB_STATE_COMPLETED, JobState.FAILED: pb.JOB_STATE_FAILED,
           JobState.CANCELLED: pb.JOB_STATE_CANCELLED}


def job_proto(info: JobInfo) -> pb.Job:
    curve = [pb.LossPoint(step=p.step, epoch=p.epoch, loss=p.loss, validation_loss=p.validation_loss)
             for p in info.loss_curve]
    return pb.Job(job_id=info.job_id, state=_STATES[info.state], model=info.model, output_model=info.output_model,
                  step=info.step, total_steps=info.total_steps, epoch=info.epoch, loss=info.loss, loss_curve=curve,
                  eta_seconds=info.eta_seconds, error=info.error, resumed=info.resumed,
                  create_time=timestamp(info.create_time), start_time=timestamp(info.start_time),
                  end_time=timestamp(info.end_time), config=struct(info.config))


def _artifacts_proto(artifacts: Artifacts) -> pb.JobArtifactsResponse:
    return pb.JobArtifactsResponse(
        job_id=artifacts.job_id, adapter_path=artifacts.adapter_path, merged_path=artifacts.merged_path,
        base_path=artifacts.base_path, registered_model=artifacts.registered_model,
        checkpoints=[pb.Checkpoint(identifier=c.identifier, epoch=c.epoch, step=c.step, path=c.path,
                                   create_time=timestamp(c.create_time)) for c in artifacts.checkpoints])


def fine_tune_request(request: pb.SupervisedFineTuneRequest) -> FineTuneRequest:
    training, data, optimizer = request.training_config, request.training_config.data_config, \
        request.training_config.optimizer_config
    lora = request.lora
    algorithm = request.WhichOneof("algorithm_config") or ""
    config: dict[str, Any] = {"training_config": json_format.MessageToDict(training, preserving_proto_field_name=True)}
    if algorithm:
        config[algorithm] = json_format.MessageToDict(getattr(request, algorithm), preserving_proto_field_name=True)
    return FineTuneRequest(
        model=request.model, dataset_id=data.dataset_id, algorithm=algorithm, n_epochs=training.n_epochs,
        max_steps_per_epoch=training.max_steps_per_epoch,
        gradient_accumulation_steps=training.gradient_accumulation_steps, batch_size=data.batch_size,
        shuffle=data.shuffle, max_seq_len=data.max_seq_len, validation_dataset_id=data.validation_dataset_id,
        lr=optimizer.lr, weight_decay=optimizer.weight_decay, num_warmup_steps=optimizer.num_warmup_steps,
        checkpoint_every_steps=training.checkpoint_every_steps, seed=training.seed, lora_rank=lora.rank,
        lora_alpha=lora.alpha, target_modules=tuple(lora.target_modules), lora_dropout=lora.dropout,
        merge_output=lora.merge_output, output_model=request.output_model, job_id=request.job_id,
        metadata=json_format.MessageToDict(request.metadata), config=config)


class PostTrainingServicer(post_training_pb2_grpc.PostTrainingServiceServicer):
    def __init__(self, core: PostTrainingCore) -> None:
        self.core = core

    async def SupervisedFineTune(self, request, context):
        info = await self.core.supervised_fine_tune(fine_tune_request(request))
        return pb.SupervisedFineTuneResponse(job=job_proto(info))

    async def JobStatus(self, request, context):
        return pb.JobStatusResponse(job=job_proto(await self.core.job_status(request.job_id)))

    async def WatchJob(self, request, context):
        async for info in self.core.watch_job(request.job_id):
            yield pb.WatchJobResponse(job=job_proto(info))

    async def ListJobs(self, request, context):
        jobs, token = await self.core.list_jobs(request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[job_proto(j) for j in jobs], next_page_token=token)

    async def JobArtifacts(self, request, context):
        return _artifacts_proto(await self.core.artifacts(request.job_id))

    async def JobCancel(self, request, context):
        return pb.JobCancelResponse(job=job_proto(await self.core.cancel_job(request.job_id)))

    async def DeleteJobArtifacts(self, request, context):
        return pb.DeleteJobArtifactsResponse(bytes_freed=await self.core.delete_artifacts(request.job_id))
