"""One run of a claimed job: prepare its folder, start the worker process, turn the worker's events
into store updates (and watcher pushes), and finish the job: register its output model, or fail it
with the reason.

The service side of a job never computes anything heavy: it reads rows from datasetio once
(written to ``rows.jsonl``, so a resumed job trains on the same rows), then follows the worker.
Cancelling the run's task terminates the worker (SIGTERM, then SIGKILL after a grace) before the
task ends: a cancelled or stopped job leaves no process behind.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable

import grpc

import services
from services.common.errors import StackmeshError
from services.common.protoutil import struct
from services.post_training.datasets import DatasetReader
from services.post_training.providers.base import CheckpointInfo, JobInfo, JobState, LossPoint, TrainingSpec
from services.post_training.providers.inline.huggingface.limits import total_steps as count_steps
from stackmesh.common.v1 import common_pb2
from stackmesh.registry.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["JobRun", "WORKER_MODULE", "write_atomic", "worker_env"]

log = logging.getLogger("stackmesh.post_training")
WORKER_MODULE = "services.post_training.providers.inline.huggingface.worker"
_ROOT = pathlib.Path(services.__file__).resolve().parent.parent
Store = Callable[..., Awaitable[Any]]
_REGISTER_ATTEMPTS = 6  # the registry down for about a minute (1+2+4+8+16 s) before the job fails
_EXIT_GRACE_SECONDS = 60.0  # after its output ends, how long the worker may take to exit


def worker_env(parent: int | None = None, omp_wait_policy: str = "PASSIVE") -> dict[str, str]:
    """The worker's environment. OpenMP threads that spin while waiting (torch's default) steal the
    CPU from the services beside the worker on a shared host, and lose to any competing thread
    (see the ``omp_wait_policy`` config field for the measurements). A value the user set is kept."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    env.setdefault("OMP_WAIT_POLICY", omp_wait_policy)
    if parent is not None:
        env["STACKMESH_WORKER_PARENT"] = str(parent)
    return env


class JobLost(Exception):
    """The store no longer lets this replica write the job (cancelled, or adopted elsewhere)."""


def write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    tmp.replace(path)


class JobRun:
    def __init__(self, job_id: str, holder: str, store: Store, folder: pathlib.Path, data_dir: pathlib.Path,
                 options: dict[str, Any], reader: DatasetReader, registry: registry_pb2_grpc.ModelsServiceStub,
                 publish: Callable[[JobInfo], None], config: Any) -> None:
        self.job_id, self.holder, self.store, self.folder, self.data_dir = job_id, holder, store, folder, data_dir
        self.options, self.reader, self.registry, self.publish, self.config = options, reader, registry, publish, config
        self.process: subprocess.Popen[bytes] | None = None
        self._step_times: collections.deque[float] = collections.deque(maxlen=10)
        self._last_step_at: float | None = None
        self._total = 0

    async def _write(self, method: str, *args: Any, **kwargs: Any) -> JobInfo:
        info = await self.store(method, self.job_id, self.holder, *args, **kwargs)
        if info is None:
            raise JobLost()
        self.publish(info)
        return info

    # --- preparing --------------------------------------------------------------------------
    async def _prepare(self, spec: TrainingSpec) -> None:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(write_atomic, self.folder / "job.json", json.dumps(
            {"job_id": self.job_id, "spec": spec.to_json(), "data_dir": str(self.data_dir), **self.options}))
        for name, dataset_id in (("rows.jsonl", spec.dataset_id), ("validation.jsonl", spec.validation_dataset_id)):
            if dataset_id and not (self.folder / name).exists():
                rows = await self.reader.rows(dataset_id)
                text = "".join(json.dumps(r) + "\n" for r in rows)
                await asyncio.to_thread(write_atomic, self.folder / name, text)
                if name == "rows.jsonl":
                    steps = count_steps(len(rows), spec)
                    if steps > self.config.max_total_steps:
                        raise StackmeshError(f"dataset '{dataset_id}' has {len(rows)} rows now, so the job would run "
                                             f"{steps} steps, over max_total_steps {self.config.max_total_steps}; "
                                             f"set max_steps_per_epoch", reason="TOO_MANY_STEPS")

    # --- the worker -------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the worker with ``subprocess`` (vfork/posix_spawn + exec): a plain fork() from a
        process running gRPC threads runs gRPC's fork handlers, which can abort the child
        (uvloop's subprocess support forks)."""
        env = worker_env(parent=os.getpid(), omp_wait_policy=self.config.omp_wait_policy)
        with open(self.folder / "worker.log", "ab") as stderr:
            return subprocess.Popen([sys.executable, "-m", WORKER_MODULE, str(self.folder)], stdout=subprocess.PIPE,
                                    stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=str(_ROOT))

    async def _stop_worker(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, self.config.cancel_grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when this wait is itself cancelled: never leave the worker behind
            if process.poll() is None:
                process.kill()
                process.wait()

    def _eta(self, step: int) -> float:
        now = time.monotonic()
        if self._last_step_at is not None:
            self._step_times.append(now - self._last_step_at)
        self._last_step_at = now
        if not self._step_times:
            return 0.0
        return sum(self._step_times) / len(self._step_times) * max(self._total - step, 0)

    async def _event(self, event: dict[str, Any], outcome: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "prepared":
            self._total = int(event["total_steps"])
            await self._write("update", total_steps=self._total)
        elif kind == "base":
            log.info("post-training base model ready job=%s path=%s converted=%s seconds=%s", self.job_id,
                     event["path"], event.get("converted"), event.get("seconds"))
            await self._write("update", base_path=str(event["path"]))
        elif kind == "start":
            self._last_step_at = None
            log.info("post-training job training job=%s from_step=%d checkpoint=%s", self.job_id, int(event["step"]),
                     event.get("checkpoint") or "-")
            await self._write("rewind", int(event["step"]))
        elif kind == "step":
            self._total = int(event.get("total_steps") or self._total)
            point = LossPoint(int(event["step"]), int(event["epoch"]), float(event["loss"]))
            await self._write("log_step", point, self._total, self._eta(point.step))
        elif kind == "validation":
            await self._write("log_validation", int(event["step"]), int(event["epoch"]), float(event["loss"]))
        elif kind == "checkpoint":
            checkpoint = CheckpointInfo("", int(event["epoch"]), int(event["step"]), str(event["path"]), time.time())
            await self._write("add_checkpoint", checkpoint, list(event.get("removed") or []))
        elif kind in ("done", "error"):
            outcome[kind] = event

    async def _follow(self) -> dict[str, Any]:
        self.process = process = self._spawn()
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        lines = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), process.stdout)
        outcome: dict[str, Any] = {}
        try:
            async for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                await self._event(event, outcome)
        finally:
            transport.close()
        try:
            outcome["returncode"] = await asyncio.to_thread(process.wait, _EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:  # its output ended but it hangs (say, in native teardown)
            outcome["hung"] = True
            await self._stop_worker()
            outcome["returncode"] = process.returncode
        return outcome

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.folder / "worker.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    # --- finishing --------------------------------------------------------------------------
    async def _register(self, spec: TrainingSpec, done: dict[str, Any]) -> str:
        adapter, merged = str(done.get("adapter_path") or ""), str(done.get("merged_path") or "")
        metadata = {"post_training_job": self.job_id, "base_model": spec.model, "base_path": done.get("base_path", ""),
                    "adapter_path": adapter, "post_training_provider": self.options["provider_id"]}
        if merged:
            metadata["merged_path"] = merged
        request = registry_pb2.RegisterModelRequest(
            model_id=spec.output_model, provider_id=spec.inference_provider_id, provider_model_id=adapter or merged,
            model_type=common_pb2.MODEL_TYPE_LLM, metadata=struct(metadata))
        for attempt in range(_REGISTER_ATTEMPTS):  # same spec again is a no-op: retrying is safe
            try:
                await self.registry.RegisterModel(request, timeout=self.config.registry_timeout_seconds)
                return spec.output_model
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or attempt + 1 == _REGISTER_ATTEMPTS:
                    raise
                log.warning("registry unavailable registering output model job=%s retry_in=%ds", self.job_id,
                            2 ** attempt)
                await asyncio.sleep(2 ** attempt)
        raise AssertionError("unreachable")

    async def _finish(self, spec: TrainingSpec, outcome: dict[str, Any]) -> JobInfo:
        done, error = outcome.get("done"), outcome.get("error")
        if done is None:
            code = outcome.get("returncode")
            if error is not None:
                reason = f"training failed: {error.get('message', '')}"
            elif outcome.get("hung"):
                reason = (f"the training worker closed its output without finishing and did not exit within "
                          f"{_EXIT_GRACE_SECONDS:.0f} s; it was stopped: {self._log_tail()}")
            elif code is not None and code < 0:
                name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                reason = (f"the training worker was killed by {name}" +
                          (" (out of memory? lower batch_size or max_seq_len)" if -code == signal.SIGKILL else ""))
            else:
                reason = f"the training worker exited with code {code}: {self._log_tail()}"
            return await self._write("finish", JobState.FAILED, time.time(), error=reason)
        await self._write("update", adapter_path=str(done.get("adapter_path") or ""),
                          merged_path=str(done.get("merged_path") or ""), base_path=str(done.get("base_path") or ""))
        registered = ""
        if spec.output_model:
            try:
                registered = await self._register(spec, done)
            except grpc.aio.AioRpcError as err:
                reason = (f"training completed, but registering output model '{spec.output_model}' failed "
                          f"({err.code().name}: {err.details()}); the artifacts are kept (JobArtifacts)")
                return await self._write("finish", JobState.FAILED, time.time(), error=reason)
        return await self._write("finish", JobState.COMPLETED, time.time(), registered_model=registered)

    async def run(self) -> JobInfo | None:
        """Run the job to its end; None when it was lost to a cancel or another replica."""
        try:
            info = await self.store("get", self.job_id)
            spec = await self.store("spec", self.job_id)
            resumed = info is not None and info.state == JobState.IN_PROGRESS
            await self._write("start", time.time(), resumed)
            try:
                await self._prepare(spec)
            except StackmeshError as err:
                return await self._write("finish", JobState.FAILED, time.time(), error=err.message)
            log.info("post-training job running job=%s model=%s resumed=%s", self.job_id, spec.model, resumed)
            outcome = await self._follow()
            final = await self._finish(spec, outcome)
            log.info("post-training job ended job=%s state=%s step=%d/%d%s", final.job_id, final.state, final.step,
                     final.total_steps, f" error={final.error!r}" if final.error else "")
            return final
        except JobLost:
            log.info("post-training job no longer held here job=%s", self.job_id)
            return None
        finally:
            await self._stop_worker()
