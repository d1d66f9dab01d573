"""Following a long-running job from the CLI: a progress bar on a terminal, a line per change otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable

__all__ = ["follow"]


def follow(updates: Iterable[Any], progress: Callable[[Any], tuple[int, int]],
           describe: Callable[[Any], str], eta: Callable[[Any], float] | None = None) -> Any:
    """Print each update of a job until the stream ends; return the last one.

    ``progress(job)`` is (done, total); ``describe(job)`` the text after the bar (state, loss, ...);
    ``eta(job)`` the seconds left as the service estimates them (by default estimated here from the
    progress seen, which counts any time spent before the first step)."""
    tty, started, job, last = sys.stderr.isatty(), time.monotonic(), None, None
    done_at_start: int | None = None
    for job in updates:
        done, total = progress(job)
        text = describe(job)
        if (done, text) == last:
            continue
        last = (done, text)
        if done_at_start is None:
            done_at_start = done
        if tty:
            filled = int(30 * done / max(total, 1))
            if eta is not None:
                left = eta(job)
            else:
                rate_done = done - done_at_start
                elapsed = time.monotonic() - started
                left = elapsed / rate_done * (total - done) if rate_done > 0 else 0.0
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {text} ETA {left:4.0f}s\033[K",
                  end="", file=sys.stderr, flush=True)
        else:
            print(f"{done}/{total} {text}", file=sys.stderr, flush=True)
    if tty:
        print(file=sys.stderr)
    return job
