"""Client calls for guarding and measuring models: shields and safety, datasets and their rows,
scoring functions and scoring, benchmarks and eval jobs. Mixed into ``StackmeshClient``."""

from __future__ import annotations

from typing import Any, Iterator

import grpc
from google.protobuf import json_format, struct_pb2

from stackmesh.client_errors import StackmeshClientError, call
from stackmesh.common.v1 import common_pb2
from stackmesh.datasetio.v1 import datasetio_pb2 as dpb, datasetio_pb2_grpc
from stackmesh.eval.v1 import eval_pb2 as epb, eval_pb2_grpc
from stackmesh.inference.v1 import inference_pb2 as ipb
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from stackmesh.safety.v1 import safety_pb2 as spb, safety_pb2_grpc
from stackmesh.scoring.v1 import scoring_pb2 as scpb, scoring_pb2_grpc

__all__ = ["EvaluationCalls", "JOB_STATES", "FINAL_JOB_STATES"]

JOB_STATES = {epb.JOB_STATE_SCHEDULED: "scheduled", epb.JOB_STATE_IN_PROGRESS: "in_progress",
              epb.JOB_STATE_COMPLETED: "completed", epb.JOB_STATE_FAILED: "failed",
              epb.JOB_STATE_CANCELLED: "cancelled"}
FINAL_JOB_STATES = (epb.JOB_STATE_COMPLETED, epb.JOB_STATE_FAILED, epb.JOB_STATE_CANCELLED)


def _struct(values: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values or {})
    return out


def _params(params: dict[str, dict[str, Any]] | None) -> dict[str, struct_pb2.Struct]:
    return {name: _struct(value) for name, value in (params or {}).items()}


class EvaluationCalls:
    channel: grpc.Channel
    timeout: float

    def _init_evaluation_stubs(self) -> None:
        self.safety = safety_pb2_grpc.SafetyServiceStub(self.channel)
        self.datasetio = datasetio_pb2_grpc.DatasetIOServiceStub(self.channel)
        self.scoring = scoring_pb2_grpc.ScoringServiceStub(self.channel)
        self.eval = eval_pb2_grpc.EvalServiceStub(self.channel)

    # ------------------------------------------------------------------ registration
    def register_shield(self, shield_id: str, *, provider_id: str = "", provider_shield_id: str = "",
                        params: dict[str, Any] | None = None) -> common_pb2.Resource:
        request = rpb.RegisterShieldRequest(shield_id=shield_id, provider_id=provider_id,
                                            provider_shield_id=provider_shield_id, params=_struct(params))
        return call(registry_pb2_grpc.ShieldsServiceStub(self.channel).RegisterShield, request,
                    timeout=self.timeout).shield

    def register_dataset(self, dataset_id: str, purpose: str, *, uri: str = "",
                         rows: list[dict[str, Any]] | None = None, provider_id: str = "",
                         metadata: dict[str, Any] | None = None) -> common_pb2.Resource:
        request = rpb.RegisterDatasetRequest(dataset_id=dataset_id, purpose=purpose, uri=uri, provider_id=provider_id,
                                             rows=[_struct(r) for r in rows or []], metadata=_struct(metadata))
        return call(registry_pb2_grpc.DatasetsServiceStub(self.channel).RegisterDataset, request,
                    timeout=self.timeout).dataset

    def register_scoring_function(self, scoring_fn_id: str, *, provider_id: str = "", provider_scoring_fn_id: str = "",
                                  description: str = "", return_type: str = "",
                                  params: dict[str, Any] | None = None) -> common_pb2.Resource:
        request = rpb.RegisterScoringFunctionRequest(
            scoring_fn_id=scoring_fn_id, provider_id=provider_id, provider_scoring_fn_id=provider_scoring_fn_id,
            description=description, return_type=return_type, params=_struct(params))
        return call(registry_pb2_grpc.ScoringFunctionsServiceStub(self.channel).RegisterScoringFunction, request,
                    timeout=self.timeout).scoring_function

    def register_benchmark(self, benchmark_id: str, dataset_id: str, scoring_functions: list[str], *,
                           provider_id: str = "", metadata: dict[str, Any] | None = None) -> common_pb2.Resource:
        request = rpb.RegisterBenchmarkRequest(benchmark_id=benchmark_id, dataset_id=dataset_id,
                                               scoring_functions=scoring_functions, provider_id=provider_id,
                                               metadata=_struct(metadata))
        return call(registry_pb2_grpc.BenchmarksServiceStub(self.channel).RegisterBenchmark, request,
                    timeout=self.timeout).benchmark

    # ------------------------------------------------------------------ safety
    def run_shield(self, shield_id: str, messages: str | list[dict[str, str]],
                   params: dict[str, Any] | None = None) -> spb.RunShieldResponse:
        turns = messages if isinstance(messages, list) else [{"role": "user", "content": messages}]
        return call(self.safety.RunShield, spb.RunShieldRequest(
            shield_id=shield_id, messages=[ipb.ChatMessage(**m) for m in turns], params=_struct(params)),
            timeout=self.timeout)

    def moderate(self, inputs: list[str], model: str = "") -> spb.RunModerationResponse:
        return call(self.safety.RunModeration, spb.RunModerationRequest(model=model, input=inputs), timeout=self.timeout)

    # ------------------------------------------------------------------ datasets
    def iter_rows(self, dataset_id: str, start_index: int = 0, limit: int = 0) -> dpb.IterRowsResponse:
        return call(self.datasetio.IterRows, dpb.IterRowsRequest(dataset_id=dataset_id, start_index=start_index,
                                                                  limit=limit), timeout=self.timeout)

    def rows(self, dataset_id: str, start_index: int = 0, limit: int = 0) -> list[dict[str, Any]]:
        return [json_format.MessageToDict(r) for r in self.iter_rows(dataset_id, start_index, limit).rows]

    def append_rows(self, dataset_id: str, rows: list[dict[str, Any]]) -> dpb.AppendRowsResponse:
        return call(self.datasetio.AppendRows, dpb.AppendRowsRequest(dataset_id=dataset_id,
                                                                      rows=[_struct(r) for r in rows]),
                    timeout=self.timeout)

    # ------------------------------------------------------------------ scoring
    def score(self, rows: list[dict[str, Any]], scoring_functions: list[str],
              params: dict[str, dict[str, Any]] | None = None) -> scpb.ScoreResponse:
        return call(self.scoring.Score, scpb.ScoreRequest(input_rows=[_struct(r) for r in rows],
                                                          scoring_functions=scoring_functions,
                                                          params=_params(params)), timeout=self.timeout)

    def score_batch(self, dataset_id: str, scoring_functions: list[str],
                    params: dict[str, dict[str, Any]] | None = None) -> scpb.ScoreBatchResponse:
        return call(self.scoring.ScoreBatch, scpb.ScoreBatchRequest(dataset_id=dataset_id,
                                                                    scoring_functions=scoring_functions,
                                                                    params=_params(params)), timeout=self.timeout)

    # ------------------------------------------------------------------ eval
    @staticmethod
    def benchmark_config(model: str, *, max_tokens: int | None = None, temperature: float | None = None,
                         system: str | None = None, num_examples: int = 0,
                         scoring_params: dict[str, dict[str, Any]] | None = None) -> epb.BenchmarkConfig:
        sampling = ipb.SamplingParams()
        if max_tokens is not None:
            sampling.max_tokens = max_tokens
        if temperature is not None:
            sampling.temperature = temperature
        candidate = epb.ModelCandidate(model=model, sampling=sampling)
        if system:
            candidate.system_message.CopyFrom(ipb.ChatMessage(role="system", content=system))
        return epb.BenchmarkConfig(eval_candidate=candidate, num_examples=num_examples,
                                   scoring_params=_params(scoring_params))

    def run_eval(self, benchmark_id: str, config: epb.BenchmarkConfig) -> epb.Job:
        return call(self.eval.RunEval, epb.RunEvalRequest(benchmark_id=benchmark_id, benchmark_config=config),
                    timeout=self.timeout).job

    def evaluate_rows(self, benchmark_id: str, rows: list[dict[str, Any]], config: epb.BenchmarkConfig,
                      scoring_functions: list[str] | None = None) -> epb.EvaluateRowsResponse:
        return call(self.eval.EvaluateRows, epb.EvaluateRowsRequest(
            benchmark_id=benchmark_id, input_rows=[_struct(r) for r in rows], benchmark_config=config,
            scoring_functions=scoring_functions or []), timeout=self.timeout)

    def job_status(self, job_id: str) -> epb.Job:
        return call(self.eval.JobStatus, epb.JobStatusRequest(job_id=job_id), timeout=self.timeout).job

    def job_result(self, job_id: str) -> epb.JobResultResponse:
        return call(self.eval.JobResult, epb.JobResultRequest(job_id=job_id), timeout=self.timeout)

    def cancel_job(self, job_id: str) -> epb.Job:
        return call(self.eval.JobCancel, epb.JobCancelRequest(job_id=job_id), timeout=self.timeout).job

    def list_jobs(self, benchmark_id: str = "") -> list[epb.Job]:
        out, token = [], ""
        while True:
            reply = call(self.eval.ListJobs, epb.ListJobsRequest(benchmark_id=benchmark_id, page_token=token),
                         timeout=self.timeout)
            out.extend(reply.jobs)
            token = reply.next_page_token
            if not token:
                return out

    def watch_job(self, job_id: str, timeout: float | None = None) -> Iterator[epb.Job]:
        """The job now, then at every step until it ends (a stream with no overall deadline by default)."""
        stream = self.eval.WatchJob(epb.WatchJobRequest(job_id=job_id), timeout=timeout)
        try:
            for reply in stream:
                yield reply.job
        except grpc.RpcError as err:
            raise StackmeshClientError.from_rpc_error(err) from None
