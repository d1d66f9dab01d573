"""``inline::huggingface`` post-training: LoRA or full fine-tuning as persisted, resumable,
cancellable jobs, trained by a worker process per job (``worker``), one job at a time per replica.

A job is recorded SCHEDULED, unclaimed; a scheduler loop per replica takes the oldest claimable
job whenever it is idle (woken at once by a submit or a finished job, else every
``heartbeat_seconds``), renews its claim while the job runs, and stops the job if the claim was
lost (cancelled through another replica, or adopted after this one stalled). ``max_queued_jobs``
bounds the queue behind the running jobs.

Restarts resume: an IN_PROGRESS job whose holder is gone (``claims``: a dead process on this host
at once, any other after ``lease_seconds``) is claimed again and its worker continues from the
last checkpoint (``resumed`` + 1); a job that crashed its service ``max_attempts`` times is FAILED
with that reason instead. A graceful stop kills the worker and hands the claim back at once. A job
is never lost and never left IN_PROGRESS without a live holder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import pathlib
import shutil
import time
import uuid
from typing import Any, AsyncIterator

from services.common.config import StackConfig
from services.common import job_claims as claims
from services.common.job_watch import JobWatchers
from services.common.paging import decode_time_cursor, newest_first_page
from services.common.errors import AlreadyExists, FailedPrecondition, ResourceExhausted, Unavailable
from services.common.storage import data_dir
from services.post_training.datasets import DatasetReader
from services.post_training.providers.base import (TERMINAL_STATES, Artifacts, JobInfo, JobState, PostTrainingProvider,
                                                   TrainingSpec, job_not_found)
from services.post_training.providers.inline.huggingface.bases import base_folder
from services.post_training.providers.inline.huggingface.config import HuggingFacePostTrainingConfig
from services.post_training.providers.inline.huggingface.limits import check_limits
from services.post_training.providers.inline.huggingface.runner import JobRun
from services.post_training.providers.inline.huggingface.shapes import shape_of
from services.post_training.providers.inline.huggingface.store import JobStore, output_model_reserved
from stackmesh.registry.v1 import registry_pb2_grpc

__all__ = ["HuggingFacePostTrainingProvider"]

log = logging.getLogger("stackmesh.post_training")


def _folder_bytes(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


class HuggingFacePostTrainingProvider(PostTrainingProvider):
    config: HuggingFacePostTrainingConfig

    def __init__(self, provider_id: str, config: HuggingFacePostTrainingConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self.data = pathlib.Path(config.data_dir).expanduser() if config.data_dir else pathlib.Path("post_training")
        self.holder = claims.holder_id()
        self.reader: DatasetReader | None = None
        self.mesh: Any = None
        self._store: JobStore | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._current: tuple[str, asyncio.Task[Any]] | None = None
        self._watchers: JobWatchers[JobInfo] = JobWatchers()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------
    def bind(self, stack: StackConfig, mesh: Any, cache: Any) -> None:
        if not self.config.data_dir:
            self.data = data_dir(stack, self.provider_id, api="post_training", persistence=self.config.persistence,
                                 kvstore=self.config.kvstore)
        self.mesh = mesh
        self.reader = DatasetReader(mesh, self.config.datasetio_timeout_seconds, self.config.unavailable_grace_seconds)

    async def initialize(self) -> None:
        if self.config.device != "cpu" or self.config.distributed_backend:
            log.warning("post_training provider=%s: device=%s distributed_backend=%s are not supported; training "
                        "runs on CPU in one process", self.provider_id, self.config.device,
                        self.config.distributed_backend)
        self.data = self.data.resolve()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"pt-store-{self.provider_id}")
        self._store = await asyncio.get_running_loop().run_in_executor(self._thread, JobStore,
                                                                       self.data / "post_training_jobs.db")
        if self.config.train_jobs:
            self._scheduler = asyncio.create_task(self._schedule(), name=f"post-training-{self.provider_id}")

    async def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        current = self._current
        if current is not None:
            current[1].cancel()  # kills the worker; the checkpoint stays for the next holder
            await asyncio.gather(current[1], return_exceptions=True)
        if self._store is not None:
            released = await self._db("release", self.holder)
            if released:  # graceful stop: the next start (or another replica) resumes them at once
                log.info("released post-training jobs for resumption jobs=%s", ",".join(released))
            await self._db("close")
            self._store = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        claims.retire(self.holder)

    async def health(self) -> tuple[bool, str]:
        return (True, "") if self._store is not None else (False, f"job store in {self.data} is not open")

    async def _db(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._store is None or self._thread is None:
            raise Unavailable(f"post_training provider '{self.provider_id}' is not open", reason="PROVIDER_NOT_READY")
        store = self._store
        return await asyncio.get_running_loop().run_in_executor(self._thread,
                                                                lambda: getattr(store, method)(*args, **kwargs))

    # --- scheduling -------------------------------------------------------------------------
    def _publish(self, info: JobInfo) -> None:
        self._watchers.publish(info)

    async def _schedule(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a busy or broken store this round; try again next round
                log.exception("post-training job scheduling failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.heartbeat_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _tick(self) -> None:
        """Renew the running job's claim (stop it if lost); when idle, take the next claimable job."""
        if self._current is not None:
            job_id, task = self._current
            if job_id not in await self._db("heartbeat", self.holder, [job_id], time.time()) and not task.done():
                log.info("post-training job no longer held here; stopping it job=%s", job_id)
                task.cancel()
            return
        now = time.time()
        for job in await self._db("claimable"):
            job_id, state, holder, heartbeat, attempts = job
            if not claims.orphaned(holder, heartbeat, now, self.config.lease_seconds, self.holder):
                continue
            if not await self._db("claim", job, self.holder, now):
                continue  # another replica was quicker
            if state == JobState.IN_PROGRESS and attempts + 1 > self.config.max_attempts:
                info = await self._db("finish", job_id, self.holder, JobState.FAILED, now, error=(
                    f"the post_training service stopped while running this job {attempts} times (last holder "
                    f"{holder}); not resuming it again (max_attempts {self.config.max_attempts})"))
                if info is not None:
                    self._publish(info)
                continue
            if state == JobState.IN_PROGRESS:
                log.info("resuming post-training job job=%s previous_holder=%s attempt=%d", job_id, holder,
                         attempts + 1)
            self._launch(job_id)
            return

    def _launch(self, job_id: str) -> None:
        task = asyncio.create_task(self._run(job_id), name=f"post-training-job-{job_id}")
        self._current = (job_id, task)

        def done(_: asyncio.Task[Any]) -> None:
            if self._current is not None and self._current[1] is task:
                self._current = None
            self._wake.set()

        task.add_done_callback(done)

    async def _run(self, job_id: str) -> None:
        assert self.reader is not None and self.mesh is not None, "bind() before running jobs"
        c = self.config
        options = {"provider_id": self.provider_id, "save_total_limit": c.save_total_limit,
                   "logging_steps": c.logging_steps, "gradient_checkpointing": c.gradient_checkpointing,
                   "torch_threads": c.torch_threads}
        registry = registry_pb2_grpc.ModelsServiceStub(self.mesh.channel("registry"))
        run = JobRun(job_id, self.holder, self._db, self.data / "jobs" / job_id, self.data, options, self.reader,
                     registry, self._publish, c)
        try:
            await run.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the job fails with the reason; the scheduler goes on
            log.exception("post-training job crashed job=%s", job_id)
            info = await self._db("finish", job_id, self.holder, JobState.FAILED, time.time(),
                                  error=f"internal error: {type(err).__name__}: {err}")
            if info is not None:
                self._publish(info)

    # --- the API ----------------------------------------------------------------------------
    async def check(self, spec: TrainingSpec, rows: int) -> None:
        c = self.config
        try:
            shape = await asyncio.to_thread(shape_of, spec.base.kind, spec.base.path)
        except (OSError, ValueError) as err:
            raise FailedPrecondition(f"cannot read the shape of model '{spec.model}' from {spec.base.path}: {err}",
                                     reason="MODEL_UNREADABLE") from None
        check_limits(spec, rows, shape, max_total_steps=c.max_total_steps, max_seq_length=c.max_seq_length,
                     max_batch_size=c.max_batch_size, max_memory_gb=c.max_memory_gb,
                     gradient_checkpointing=c.gradient_checkpointing)
        if spec.output_model:
            other = await self._db("active_with_output", spec.output_model)
            if other:
                raise AlreadyExists(output_model_reserved(spec.output_model, other), reason="OUTPUT_MODEL_RESERVED",
                                    metadata={"output_model": spec.output_model, "job_id": other})
        queued = await self._db("queued")
        if queued >= c.max_queued_jobs:
            raise ResourceExhausted(f"{queued} post-training jobs are already waiting (max_queued_jobs "
                                    f"{c.max_queued_jobs}); retry when one has started, or cancel one",
                                    reason="QUEUE_FULL", metadata={"queued": queued})

    async def submit(self, spec: TrainingSpec, job_id: str, rows: int) -> JobInfo:
        from services.post_training.providers.inline.huggingface.limits import total_steps

        steps = total_steps(rows, spec)
        spec = dataclasses.replace(
            spec, weight_decay=spec.weight_decay or self.config.weight_decay,
            num_warmup_steps=spec.num_warmup_steps or math.ceil(self.config.warmup_ratio * steps))
        job_id = job_id or f"ft-{uuid.uuid4().hex[:16]}"
        info = await self._db("create", job_id, spec, steps, str(base_folder(self.data, spec.base)), time.time())
        self._wake.set()
        log.info("post-training job scheduled job=%s model=%s dataset=%s steps=%d output_model=%s", job_id, spec.model,
                 spec.dataset_id, steps, spec.output_model or "-")
        return info

    async def get_job(self, job_id: str) -> JobInfo | None:
        return await self._db("get", job_id)

    def watch_job(self, job_id: str) -> AsyncIterator[JobInfo]:
        return self._watchers.follow(job_id, lambda: self._db("get", job_id),
                                     advanced=lambda last, new: new.progress() != last.progress(),
                                     not_found=lambda: job_not_found(job_id),
                                     poll_seconds=1.0)

    async def cancel_job(self, job_id: str) -> JobInfo:
        info = await self._db("get", job_id)
        if info is None:
            raise job_not_found(job_id)
        if info.state in TERMINAL_STATES:
            return info
        info = await self._db("cancel", job_id, "cancelled by request", time.time())
        self._publish(info)
        current = self._current
        if current is not None and current[0] == job_id:
            current[1].cancel()  # terminates the worker before the task ends
            await asyncio.wait([current[1]], timeout=self.config.cancel_grace_seconds + 10)
        log.info("post-training job cancelled job=%s step=%d/%d", job_id, info.step, info.total_steps)
        return info

    async def list_jobs(self, after: str, limit: int) -> tuple[list[JobInfo], str]:
        return newest_first_page(await self._db("page", decode_time_cursor(after), limit + 1), limit)

    async def artifacts(self, job_id: str) -> Artifacts:
        if await self._db("get", job_id) is None:
            raise job_not_found(job_id)
        results = await self._db("results", job_id)
        return Artifacts(job_id, tuple(await self._db("checkpoints", job_id)), **results)

    async def delete_artifacts(self, job_id: str, served_by: list[str]) -> int:
        info = await self._db("get", job_id)
        if info is None:
            raise job_not_found(job_id)
        if not info.terminal:
            raise FailedPrecondition(f"job '{job_id}' is {info.state.upper()}; cancel it (JobCancel) before deleting "
                                     f"its files", reason="JOB_ACTIVE", metadata={"job_id": job_id})
        if served_by:
            raise FailedPrecondition(f"model(s) {', '.join(repr(m) for m in served_by)} are served from job "
                                     f"'{job_id}''s files; unregister them first (`stackmesh models unregister`)",
                                     reason="ARTIFACTS_IN_USE", metadata={"job_id": job_id,
                                                                          "models": ",".join(served_by)})
        folder = self.data / "jobs" / job_id
        freed = await asyncio.to_thread(lambda: _folder_bytes(folder) if folder.exists() else 0)
        await asyncio.to_thread(shutil.rmtree, folder, True)
        await self._db("clear_artifacts", job_id)
        log.info("post-training job files deleted job=%s bytes=%d", job_id, freed)
        return freed
