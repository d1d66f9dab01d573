"""``python -m services.post_training.providers.inline.huggingface.worker <job folder>``: one job's training.

Training runs in its own process, one per job, so that the service's event loop never waits on
torch, a cancel is a signal (the process ends, its memory goes back to the system at once), and a
crash of the trainer (out of memory, a bug in a library) fails one job, not the service.

The protocol with the service is one JSON object per line on the original stdout (events:
phase, base, prepared, resumed, step, validation, checkpoint, done, error); everything libraries
print goes to stderr, which the service sends to ``<job>/worker.log``. The worker dies with the
service: PR_SET_PDEATHSIG where Linux has it, and a parent check between steps everywhere. A job
whose results are complete (``done.json``) is not trained again: the worker only reports them.
"""

from __future__ import annotations

import ctypes
import json
import os
import pathlib
import signal
import sys
import traceback
from typing import Any, TextIO

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the check between steps remains
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(3)


def _events() -> TextIO:
    """The events stream: the original stdout; fd 1 becomes stderr, so stray prints cannot
    corrupt the protocol."""
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m services.post_training.providers.inline.huggingface.worker JOB_FOLDER",
              file=sys.stderr)
        return 2
    parent = int(os.environ.get("STACKMESH_WORKER_PARENT", "0") or 0)
    if parent:
        _die_with_parent(parent)
    stream = _events()

    def emit(event: str, **fields: Any) -> None:
        stream.write(json.dumps({"event": event, **fields}) + "\n")
        stream.flush()

    def still_wanted() -> bool:
        return not parent or os.getppid() == parent

    folder = pathlib.Path(args[0])
    try:
        from services.post_training.providers.inline.huggingface.trainer import JobFiles, train

        files = JobFiles(folder)
        if files.done.is_file():
            emit("done", **json.loads(files.done.read_text()))
            return 0
        result = train(files, emit, still_wanted)
        if not result:
            return 3  # the service went away: nothing more to report
        emit("done", **result)
        return 0
    except MemoryError:
        emit("error", message="the training worker ran out of memory; lower batch_size or max_seq_len")
        return 1
    except Exception as err:  # noqa: BLE001 - every failure becomes the job's reason
        traceback.print_exc()
        emit("error", message=f"{type(err).__name__}: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
