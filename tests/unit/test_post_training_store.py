"""The post-training job store's claim rule: a replica that lost a job (adopted by another after
it stalled, or cancelled) cannot write anything more about it; and checkpoint pruning leaves a
save that is still being written alone."""

from __future__ import annotations

import os
import time

from services.post_training.providers.base import BaseSource, CheckpointInfo, JobState, TrainingSpec
from services.post_training.providers.inline.huggingface import checkpoints
from services.post_training.providers.inline.huggingface.store import JobStore

SPEC = TrainingSpec(model="m", base=BaseSource("m", "llama-cpp", "gguf", "/m.gguf"), dataset_id="d", algorithm="lora")


def adopted_job(tmp_path) -> JobStore:
    """Job 'j' claimed by replica 'a', then adopted by 'b' (a's lease ran out)."""
    store = JobStore(tmp_path / "jobs.db")
    store.create("j", SPEC, 10, "/base", time.time())
    (job,) = store.claimable()
    assert store.claim(job, "a", time.time()) and store.start("j", "a", time.time(), False)
    (job,) = store.claimable()
    assert store.claim(job, "b", time.time())
    return store


def test_the_replica_that_lost_a_job_cannot_add_checkpoints_or_validation_loss(tmp_path):
    store = adopted_job(tmp_path)
    stale = CheckpointInfo("", 0, 5, "/jobs/j/checkpoints/step-000005", time.time())
    assert store.add_checkpoint("j", "a", stale, []) is None
    assert store.log_validation("j", "a", 5, 0, 1.25) is None
    assert store.checkpoints("j") == [] and store.get("j").loss_curve == ()
    fresh = CheckpointInfo("", 0, 3, "/jobs/j/checkpoints/step-000003", time.time())
    info = store.add_checkpoint("j", "b", fresh, [])
    assert info is not None and [c.step for c in store.checkpoints("j")] == [3]
    assert store.log_validation("j", "b", 3, 0, 0.5).loss_curve[0].validation_loss == 0.5
    store.close()


def test_no_writes_after_the_job_ended(tmp_path):
    store = adopted_job(tmp_path)
    assert store.finish("j", "b", JobState.CANCELLED, time.time()) is not None
    assert store.add_checkpoint("j", "b", CheckpointInfo("", 0, 4, "/x", time.time()), []) is None
    assert store.checkpoints("j") == []
    store.close()


def test_pruning_keeps_the_newest_and_a_save_in_progress(tmp_path):
    for step in (1, 2, 3):
        folder = tmp_path / checkpoints.checkpoint_name(step)
        folder.mkdir()
        (folder / "state.json").write_text(f'{{"step": {step}, "epoch": 0, "step_in_epoch": {step}}}')
    writing = tmp_path / ".tmp-step-000004-aaaa"  # another worker of the job, saving right now
    writing.mkdir()
    left_behind = tmp_path / ".tmp-step-000002-bbbb"  # a worker killed mid-save long ago
    left_behind.mkdir()
    old = time.time() - checkpoints.STALE_TMP_SECONDS - 60
    os.utime(left_behind, (old, old))
    removed = checkpoints.prune(tmp_path, keep=2)
    assert [p.name for p in removed] == ["step-000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-step-000004-aaaa", "step-000002", "step-000003"]
