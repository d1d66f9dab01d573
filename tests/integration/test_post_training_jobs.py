"""The huggingface post-training provider's jobs, trained for real by worker processes on a tiny
Llama (tests/fixtures/post_training/tiny_model.py: milliseconds a step): progress, checkpoints,
artifacts, registration in a real in-process registry, cancel, crash/restart resume, failures.

One stand-in, named as such: ``RowsReader`` serves the fixture's rows in place of datasetio (the
real datasetio path is exercised by tests/e2e/test_post_training_mesh.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib

import pytest

from services.common.config import MeshConfig, ServiceTarget
from services.common.errors import FailedPrecondition
from services.common.mesh import MeshClient
from services.common.registry_cache import RegistryCache
from services.common import job_claims as claims
from services.post_training.core import PostTrainingCore
from services.post_training.providers.base import BaseSource, JobState, TrainingSpec
from services.post_training.providers.inline.huggingface.config import HuggingFacePostTrainingConfig
from services.post_training.providers.inline.huggingface.provider import HuggingFacePostTrainingProvider
from services.post_training.router import PostTrainingRouter
from stackmesh.common.v1 import common_pb2 as T
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
from tests.conftest import make_config
from tests.fixtures.post_training.tiny_model import FIXTURE, tiny_model_folder

ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]  # 16 conversations
PROVIDERS = {"inference": [{"provider_id": "transformers", "provider_type": "inline::transformers"}]}


class RowsReader:
    """Stand-in for datasetio (see the module docstring)."""

    def __init__(self, rows=ROWS) -> None:
        self.table = rows

    async def count(self, dataset_id: str) -> int:
        return len(self.table)

    async def rows(self, dataset_id: str, limit: int | None = None):
        return list(self.table)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> pathlib.Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
async def registry(inproc, tmp_path):
    host, _ = await inproc.registry(make_config(tmp_path, providers=PROVIDERS))
    mesh = MeshClient(MeshConfig(registry=ServiceTarget(target=f"127.0.0.1:{host.port}")))
    yield mesh
    await mesh.close()


def spec(tiny: pathlib.Path, **fields) -> TrainingSpec:
    values = dict(model="tiny", base=BaseSource("tiny", "transformers", "transformers", str(tiny)), dataset_id="xylo",
                  algorithm="lora", batch_size=4, max_seq_len=128, lr=1e-2, shuffle=True, seed=7,
                  inference_provider_id="transformers")
    values.update(fields)
    return TrainingSpec(**values)


async def open_provider(tmp_path, mesh, **overrides) -> HuggingFacePostTrainingProvider:
    values = dict(data_dir=str(tmp_path / "pt"), heartbeat_seconds=0.2, save_total_limit=2, max_total_steps=5000,
                  cancel_grace_seconds=1.0)
    values.update(overrides)
    provider = HuggingFacePostTrainingProvider("huggingface", HuggingFacePostTrainingConfig(**values), {})
    provider.bind(make_config(tmp_path, providers=PROVIDERS), mesh, None)
    provider.reader = RowsReader()
    await provider.initialize()
    return provider


async def crash(provider: HuggingFacePostTrainingProvider) -> None:
    """What kill -9 of the service leaves: tasks and worker gone, the claim not released."""
    provider._scheduler.cancel()
    tasks = [provider._scheduler] + ([provider._current[1]] if provider._current else [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    provider._store.conn.close()
    provider._thread.shutdown()
    claims.retire(provider.holder)


async def until_job(provider, job_id: str, predicate, timeout: float = 120.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info = await provider.get_job(job_id)
        if predicate(info):
            return info
        assert asyncio.get_running_loop().time() < deadline, f"job never reached the expected state: {info}"
        await asyncio.sleep(0.05)


async def watch(provider, job_id: str, timeout: float = 180.0):
    async def collect():
        return [info async for info in provider.watch_job(job_id)]
    return await asyncio.wait_for(collect(), timeout)


def workers_of(folder: pathlib.Path) -> list[int]:
    """Worker processes training the job in ``folder``."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"services.post_training.providers.inline.huggingface.worker" in cmdline and str(folder).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.timeout(300)
async def test_a_job_trains_checkpoints_saves_and_registers_its_model(tmp_path, tiny, registry):
    provider = await open_provider(tmp_path, registry)
    cache = RegistryCache(registry, lambda rtype: ["transformers"])
    cache.start()
    core = PostTrainingCore(PostTrainingRouter(make_config(tmp_path, providers=PROVIDERS), cache),
                            {"huggingface": provider}, RowsReader())
    try:
        job = await provider.submit(spec(tiny, n_epochs=2, checkpoint_every_steps=3, merge_output=True,
                                         output_model="tiny-tuned", validation_dataset_id="held-out"),
                                    "job-1", len(ROWS))
        assert (job.state, job.total_steps) == (JobState.SCHEDULED, 8)  # 2 epochs x 16 rows / batch 4
        steps = await watch(provider, "job-1")
        last = steps[-1]
        assert last.state == JobState.COMPLETED, last.error
        assert [s.step for s in steps if s.state == JobState.IN_PROGRESS][-1] == 8
        assert [p.step for p in last.loss_curve] == list(range(1, 9))
        assert [p.epoch for p in last.loss_curve] == [1] * 4 + [2] * 4
        assert last.loss_curve[0].loss > last.loss_curve[-1].loss and last.loss == last.loss_curve[-1].loss
        validation = [(p.step, p.epoch) for p in last.loss_curve if p.validation_loss is not None]
        assert validation == [(4, 1), (8, 2)]  # after each epoch
        assert last.start_time and last.end_time >= last.start_time and last.eta_seconds == 0

        artifacts = await provider.artifacts("job-1")
        assert (pathlib.Path(artifacts.adapter_path) / "adapter_config.json").is_file()
        assert (pathlib.Path(artifacts.merged_path) / "config.json").is_file()
        assert artifacts.base_path == str(tiny) and artifacts.registered_model == "tiny-tuned"
        assert [c.step for c in artifacts.checkpoints] == [3, 6]  # every 3 steps, save_total_limit 2
        assert all(pathlib.Path(c.path).is_dir() for c in artifacts.checkpoints)

        models = registry_pb2_grpc.ModelsServiceStub(registry.channel("registry"))
        served = (await models.GetModel(rpb.GetModelRequest(model_id="tiny-tuned"))).model
        assert (served.provider_id, served.provider_resource_id) == ("transformers", artifacts.adapter_path)
        assert (served.source, served.model.model_type) == (T.RESOURCE_SOURCE_REGISTERED, T.MODEL_TYPE_LLM)
        assert dict(served.metadata) == {"post_training_job": "job-1", "base_model": "tiny", "base_path": str(tiny),
                                         "adapter_path": artifacts.adapter_path, "merged_path": artifacts.merged_path,
                                         "post_training_provider": "huggingface"}

        await cache.wait_synced(5)
        await asyncio.sleep(0.2)
        with pytest.raises(FailedPrecondition, match="'tiny-tuned' are served from job 'job-1''s files"):
            await core.delete_artifacts("job-1")
        await models.UnregisterModel(rpb.UnregisterModelRequest(model_id="tiny-tuned"))
        assert pathlib.Path(artifacts.adapter_path).is_dir()  # unregistering never deletes files
        for _ in range(100):
            if not core.models_of_job("job-1"):
                break
            await asyncio.sleep(0.05)
        freed = await core.delete_artifacts("job-1")
        assert freed > 0 and not (tmp_path / "pt" / "jobs" / "job-1").exists() and tiny.is_dir()
        after = await provider.artifacts("job-1")
        assert (after.adapter_path, after.merged_path, after.checkpoints) == ("", "", ())
    finally:
        await cache.stop()
        await provider.shutdown()


@pytest.mark.timeout(300)
async def test_cancel_stops_the_worker_at_once(tmp_path, tiny, registry):
    provider = await open_provider(tmp_path, registry)
    try:
        await provider.submit(spec(tiny, n_epochs=400), "long", len(ROWS))
        await until_job(provider, "long", lambda j: j.step >= 3)
        folder = tmp_path / "pt" / "jobs" / "long"
        assert workers_of(folder)
        with pytest.raises(FailedPrecondition, match="job 'long' is IN_PROGRESS; cancel it"):
            await provider.delete_artifacts("long", [])
        cancelled = await provider.cancel_job("long")
        assert cancelled.state == JobState.CANCELLED and cancelled.error == "cancelled by request"
        assert not workers_of(folder) and provider._current is None
        step = cancelled.step
        await asyncio.sleep(1.0)
        later = await provider.get_job("long")
        assert later.state == JobState.CANCELLED and later.step <= step + 1
        assert (await provider.cancel_job("long")).state == JobState.CANCELLED  # idempotent
    finally:
        await provider.shutdown()


@pytest.mark.timeout(300)
async def test_a_crashed_service_resumes_the_job_from_its_checkpoint(tmp_path, tiny, registry, caplog):
    caplog.set_level(logging.INFO, logger="stackmesh.post_training")
    first = await open_provider(tmp_path, registry)
    await first.submit(spec(tiny, n_epochs=15, checkpoint_every_steps=5), "resumable", len(ROWS))
    before = await until_job(first, "resumable", lambda j: j.step >= 8)
    await crash(first)
    folder = tmp_path / "pt" / "jobs" / "resumable"
    assert not workers_of(folder)

    second = await open_provider(tmp_path, registry)
    try:
        steps = await watch(second, "resumable")
        last = steps[-1]
        assert last.state == JobState.COMPLETED, last.error
        assert last.resumed == 1 and last.step == last.total_steps == 60
        assert [p.step for p in last.loss_curve] == list(range(1, 61))  # each step once, none lost
        starts = [r.getMessage() for r in caplog.records
                  if "post-training job training job=resumable" in r.getMessage()]
        assert len(starts) == 2 and "from_step=0 " in starts[0]
        resumed_from = int(starts[1].split("from_step=")[1].split()[0])
        assert resumed_from in (5, 10, 15) and "checkpoints/step-0000" in starts[1]  # not from scratch
        for old, new in zip(before.loss_curve, last.loss_curve):  # same batches, same RNG: the same losses
            assert old.step == new.step and old.loss == pytest.approx(new.loss, rel=1e-4)
    finally:
        await second.shutdown()


@pytest.mark.timeout(300)
async def test_a_graceful_stop_hands_the_job_to_the_next_start(tmp_path, tiny, registry):
    first = await open_provider(tmp_path, registry)
    await first.submit(spec(tiny, n_epochs=10, checkpoint_every_steps=4), "handed-over", len(ROWS))
    await until_job(first, "handed-over", lambda j: j.step >= 5)
    await first.shutdown()
    assert (await asyncio.to_thread(lambda: workers_of(tmp_path / "pt" / "jobs" / "handed-over"))) == []
    second = await open_provider(tmp_path, registry)
    try:
        last = (await watch(second, "handed-over"))[-1]
        assert (last.state, last.resumed, last.step) == (JobState.COMPLETED, 1, 40)
    finally:
        await second.shutdown()


@pytest.mark.timeout(300)
async def test_two_replicas_sharing_the_store_each_train_one_job(tmp_path, tiny, registry):
    first = await open_provider(tmp_path, registry)
    second = await open_provider(tmp_path, registry)
    try:
        for job_id in ("a", "b", "c"):
            await first.submit(spec(tiny, n_epochs=60), job_id, len(ROWS))
        running = await asyncio.wait_for(_both_running(first), 120)
        assert len(running) == 2  # one job per replica, the third waits
        assert {first._current[0], second._current[0]} == running
        assert (await first.get_job(({"a", "b", "c"} - running).pop())).state == JobState.SCHEDULED
        for job_id in ("a", "b", "c"):
            await first.cancel_job(job_id)  # through either replica: the holder stops its worker
        await until_job(first, "a", lambda j: first._current is None and second._current is None, timeout=20)
    finally:
        await first.shutdown()
        await second.shutdown()


async def _both_running(provider) -> set[str]:
    while True:
        jobs, _ = await provider.list_jobs("", 10)
        running = {j.job_id for j in jobs if j.state == JobState.IN_PROGRESS}
        if len(running) >= 2:
            return running
        await asyncio.sleep(0.1)


@pytest.mark.timeout(120)
async def test_a_job_that_keeps_crashing_its_service_is_failed_with_the_reason(tmp_path, tiny, registry):
    first = await open_provider(tmp_path, registry, max_attempts=1, train_jobs=False)
    await first.submit(spec(tiny), "crashy", len(ROWS))
    dead = f"{os.uname().nodename}:999999:gone"  # a process of this host that no longer exists
    claimable = (await first._db("claimable"))[0]
    assert await first._db("claim", claimable, dead, 1.0)
    assert await first._db("start", "crashy", dead, 1.0, False)
    await first.shutdown()
    second = await open_provider(tmp_path, registry, max_attempts=1)
    try:
        last = (await watch(second, "crashy", timeout=30))[-1]
        assert last.state == JobState.FAILED
        assert "stopped while running this job 1 times" in last.error and "max_attempts 1" in last.error
    finally:
        await second.shutdown()


@pytest.mark.timeout(300)
async def test_failures_are_the_jobs_reason_and_keep_the_artifacts(tmp_path, tiny, registry):
    provider = await open_provider(tmp_path, registry)
    models = registry_pb2_grpc.ModelsServiceStub(registry.channel("registry"))
    try:
        await provider.submit(spec(tiny, max_seq_len=16), "too-short", len(ROWS))  # only the system prompt fits
        last = (await watch(provider, "too-short"))[-1]
        assert last.state == JobState.FAILED
        assert "no row has an assistant turn within max_seq_len 16 tokens" in last.error

        await provider.submit(spec(tiny, output_model="taken-meanwhile"), "late", len(ROWS))
        await models.RegisterModel(rpb.RegisterModelRequest(model_id="taken-meanwhile", provider_id="transformers",
                                                            provider_model_id=str(tiny)))
        last = (await watch(provider, "late"))[-1]
        assert last.state == JobState.FAILED
        assert "registering output model 'taken-meanwhile' failed (ALREADY_EXISTS" in last.error
        assert (pathlib.Path((await provider.artifacts("late")).adapter_path) / "adapter_config.json").is_file()
    finally:
        await provider.shutdown()
