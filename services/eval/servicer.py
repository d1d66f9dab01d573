"""EvalService: proto <-> domain around the core; no job or scoring logic here."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from services.common.protoutil import struct, timestamp
from services.eval.core import EvalCore, RunRequest
from services.eval.providers.base import Candidate, EvalResult, JobInfo, JobState
from stackmesh.eval.v1 import eval_pb2 as pb, eval_pb2_grpc
from stackmesh.scoring.v1 import scoring_pb2

__all__ = ["EvalServicer", "job_proto"]

_STATES = {JobState.SCHEDULED: pb.JOB_STATE_SCHEDULED, JobState.IN_PROGRESS: pb.JOB_STATE_IN_PROGRESS,
           JobState.COMPLETED: pb.JOB_STATE_COMPLETED, JobState.FAILED: pb.JOB_STATE_FAILED,
           JobState.CANCELLED: pb.JOB_STATE_CANCELLED}


def job_proto(info: JobInfo) -> pb.Job:
    return pb.Job(job_id=info.job_id, benchmark_id=info.benchmark_id, state=_STATES[info.state],
                  rows_done=info.rows_done, rows_total=info.rows_total, error=info.error, model=info.model,
                  create_time=timestamp(info.create_time), start_time=timestamp(info.start_time),
                  end_time=timestamp(info.end_time))


def _run_request(config: pb.BenchmarkConfig) -> RunRequest:
    candidate = config.eval_candidate
    system = (json_format.MessageToDict(candidate.system_message, preserving_proto_field_name=True)
              if candidate.HasField("system_message") else None)
    return RunRequest(
        Candidate(model=candidate.model,
                  sampling=json_format.MessageToDict(candidate.sampling, preserving_proto_field_name=True),
                  system_message=system),
        {fn: json_format.MessageToDict(params) for fn, params in config.scoring_params.items()},
        config.num_examples)


def _scores(scores: dict[str, dict[str, Any]]) -> dict[str, scoring_pb2.ScoringResult]:
    return {fn: scoring_pb2.ScoringResult(score_rows=[struct(r) for r in result.get("score_rows", [])],
                                          aggregated_results=struct(result.get("aggregated_results")))
            for fn, result in scores.items()}


def _timeout(context: Any) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


def _result_fields(result: EvalResult) -> dict[str, Any]:
    return {"generations": [struct(g) for g in result.generations], "scores": _scores(result.scores)}


class EvalServicer(eval_pb2_grpc.EvalServiceServicer):
    def __init__(self, core: EvalCore) -> None:
        self.core = core

    async def RunEval(self, request, context):
        info = await self.core.run_eval(request.benchmark_id, _run_request(request.benchmark_config))
        return pb.RunEvalResponse(job=job_proto(info))

    async def EvaluateRows(self, request, context):
        rows = [json_format.MessageToDict(r) for r in request.input_rows]
        result = await self.core.evaluate_rows(request.benchmark_id, rows, list(request.scoring_functions),
                                               _run_request(request.benchmark_config), _timeout(context))
        return pb.EvaluateRowsResponse(**_result_fields(result))

    async def JobStatus(self, request, context):
        return pb.JobStatusResponse(job=job_proto(await self.core.job_status(request.job_id, request.benchmark_id)))

    async def WatchJob(self, request, context):
        async for info in self.core.watch_job(request.job_id, request.benchmark_id):
            yield pb.WatchJobResponse(job=job_proto(info))

    async def JobResult(self, request, context):
        result = await self.core.job_result(request.job_id, request.benchmark_id)
        return pb.JobResultResponse(job=job_proto(result.job), **_result_fields(result.result))

    async def JobCancel(self, request, context):
        return pb.JobCancelResponse(job=job_proto(await self.core.cancel_job(request.job_id, request.benchmark_id)))

    async def ListJobs(self, request, context):
        jobs, token = await self.core.list_jobs(request.benchmark_id, request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[job_proto(j) for j in jobs], next_page_token=token)
