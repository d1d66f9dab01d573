"""Who runs a job: claim holders and when a claim is orphaned.

A holder is ``host:pid:instance`` (instance: random per process start). A replica renews its
claims' heartbeat every few seconds; a claim is orphaned, and the job may be adopted, when

- nobody holds it (released at a graceful stop, or never claimed);
- its heartbeat is older than the lease (the replica died or hangs, on any machine);
- its holder is a process of this host that is gone (restart after ``kill -9``: adopted at once,
  without waiting for the lease), or an earlier incarnation of this very pid (containers restart
  as PID 1 again, with the same host name): a holder of this pid is alive only if this process
  started it and has not retired it.

Two replicas that both judge a job orphaned race on a compare-and-set in the store; one wins.
Should a live holder ever be misjudged (two containers sharing a host name but not a PID namespace),
the job is run twice but never corrupted: the first holder's next write fails and it stops.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["holder_id", "retire", "orphaned", "pid_alive"]

_LIVE: set[str] = set()  # holders started by this process and still running


def holder_id() -> str:
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _LIVE.add(holder)
    return holder


def retire(holder: str) -> None:
    _LIVE.discard(holder)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _parse(holder: str) -> tuple[str, int, str] | None:
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def orphaned(holder: str | None, heartbeat: float | None, now: float, lease: float, me: str) -> bool:
    """Whether a job held by ``holder`` (last renewed at ``heartbeat``) may be adopted by ``me``.
    ``me`` itself counts as orphaned: the caller only asks about jobs it is not running."""
    if not holder or holder == me:
        return True
    if heartbeat is None or now - heartbeat > lease:
        return True
    theirs, mine = _parse(holder), _parse(me)
    if theirs is None or mine is None or theirs[0] != mine[0]:
        return False
    if theirs[1] == mine[1]:
        return holder not in _LIVE
    return not pid_alive(theirs[1])
