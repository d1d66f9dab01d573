"""Training checkpoints: everything a restarted job needs to continue as if it had not stopped.

A checkpoint is a folder ``<job>/checkpoints/step-<N>/`` holding the trained weights (the LoRA
adapter, or the whole model for full fine-tuning), ``training_state.pt`` (optimizer, scheduler,
torch and Python RNG states) and ``state.json`` (optimizer step, epoch and position in the
epoch's data order). It is written under a temporary name and renamed into place: a folder named
``step-<N>`` is complete, whatever killed the process and when. Only the newest ``keep`` are kept.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import shutil
import time
import uuid
from typing import Any

STALE_TMP_SECONDS = 600.0

__all__ = ["Position", "save_checkpoint", "latest_checkpoint", "load_training_state", "prune", "checkpoint_name"]


@dataclasses.dataclass(frozen=True)
class Position:
    """Where training stands: ``step`` optimizer steps done; the next step is step ``step_in_epoch``
    (0-based) of epoch ``epoch`` (0-based)."""

    step: int
    epoch: int
    step_in_epoch: int
    created: float = 0.0


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def save_checkpoint(folder: pathlib.Path, position: Position, model: Any, optimizer: Any, scheduler: Any,
                    lora: bool) -> pathlib.Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / checkpoint_name(position.step)
    tmp = folder / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(str(tmp / ("adapter" if lora else "model")))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()},
                   tmp / "training_state.pt")
        stamped = dataclasses.replace(position, created=time.time())
        (tmp / "state.json").write_text(json.dumps(dataclasses.asdict(stamped)))
        if target.exists():  # the same step saved before a crash: replace it
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _position(path: pathlib.Path) -> Position | None:
    try:
        return Position(**json.loads((path / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def latest_checkpoint(folder: pathlib.Path) -> tuple[pathlib.Path, Position] | None:
    """The newest complete checkpoint in ``folder``, if any."""
    found = []
    for path in folder.glob("step-*"):
        position = _position(path)
        if position is not None:
            found.append((position.step, path, position))
    if not found:
        return None
    _, path, position = max(found, key=lambda item: item[0])
    return path, position


def load_training_state(path: pathlib.Path, optimizer: Any, scheduler: Any) -> None:
    import torch

    state = torch.load(path / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])


def prune(folder: pathlib.Path, keep: int) -> list[pathlib.Path]:
    """Delete all but the newest ``keep`` checkpoints (and leftovers of saves interrupted more than
    ``STALE_TMP_SECONDS`` ago); returns the deleted checkpoint folders."""
    complete = sorted((p for p in folder.glob("step-*") if _position(p) is not None), key=lambda p: p.name)
    removed = complete[:-keep] if keep > 0 else complete
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    now = time.time()
    for leftover in folder.glob(".tmp-*"):
        try:
            idle = now - leftover.stat().st_mtime
        except OSError:
            continue
        # A save being written right now (by a worker of this job that another replica has not
        # stopped yet) is left alone; only what a killed worker left behind is old.
        if idle > STALE_TMP_SECONDS:
            shutil.rmtree(leftover, ignore_errors=True)
    return removed
