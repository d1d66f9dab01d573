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
import sqlite3
import uuid
from typing import Any, Callable, Iterable

__all__ = ["holder_id", "retire", "orphaned", "pid_alive", "ClaimedJobsTable", "ACTIVE", "MINE"]

ACTIVE = "state IN ('scheduled', 'in_progress')"  # SQL: a job someone may hold
MINE = f"job_id = ? AND holder = ? AND {ACTIVE}"  # SQL: still held by this holder (args: job_id, holder)

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


class ClaimedJobsTable:
    """The claim operations on a SQLite ``jobs`` table with columns ``job_id``, ``state``
    (``scheduled``, ``in_progress`` or terminal), ``holder``, ``heartbeat`` and ``attempts``,
    shared by the job stores (eval, post-training). Needs ``self.conn``; the store's thread only."""

    conn: sqlite3.Connection

    def get(self, job_id: str) -> Any:
        raise NotImplementedError  # the store's job, as its API returns it

    def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        return self.conn.execute(sql, tuple(args)).rowcount

    def _as_holder(self, job_id: str, holder: str, *writes: tuple[str, Iterable[Any]],
                   body: Callable[[], None] | None = None) -> Any:
        """Run ``writes`` (then ``body``) in one write transaction if ``holder`` still holds the active
        job; the job as committed, or None (and nothing written) when it no longer does: it was
        cancelled, or adopted by another replica after this one stalled."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if self.conn.execute(f"SELECT 1 FROM jobs WHERE {MINE}", (job_id, holder)).fetchone() is None:
                self.conn.execute("ROLLBACK")
                return None
            for sql, args in writes:
                self._write(sql, args)
            if body is not None:
                body()
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return self.get(job_id)

    def _claim(self, job_id: str, old_holder: str | None, old_heartbeat: float | None, holder: str,
               now: float) -> bool:
        """Take the job if nobody changed its claim since it was read (compare-and-set); each claim
        counts an attempt."""
        return self._write(f"UPDATE jobs SET holder = ?, heartbeat = ?, attempts = attempts + 1 WHERE job_id = ? "
                           f"AND {ACTIVE} AND holder IS ? AND heartbeat IS ?",
                           (holder, now, job_id, old_holder, old_heartbeat)) == 1

    def _newest_first(self, columns: str, after: tuple[float, str] | None, limit: int,
                      filters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows of jobs, newest first (create_time, then job_id, descending), those
        after the cursor ``after`` = (create_time, job_id) of the last row of the previous page."""
        where, args = [f"{column} = ?" for column in filters or {}], list((filters or {}).values())
        if after is not None:
            where.append("(create_time < ? OR (create_time = ? AND job_id < ?))")
            args += [after[0], after[0], after[1]]
        sql = (f"SELECT {columns} FROM jobs {'WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY create_time DESC, job_id DESC LIMIT ?")
        return list(self.conn.execute(sql, (*args, limit)))

    def heartbeat(self, holder: str, job_ids: list[str], now: float) -> set[str]:
        """Renew ``holder``'s claims on ``job_ids`` (the jobs it runs); returns those it still holds.
        Claims it holds but does not list lapse, so a job whose task died gets adopted."""
        held: set[str] = set()
        for start in range(0, len(job_ids), 500):
            part = job_ids[start:start + 500]
            marks = ", ".join("?" * len(part))
            self._write(f"UPDATE jobs SET heartbeat = ? WHERE holder = ? AND {ACTIVE} AND job_id IN ({marks})",
                        (now, holder, *part))
            held |= {r[0] for r in self.conn.execute(
                f"SELECT job_id FROM jobs WHERE holder = ? AND {ACTIVE} AND job_id IN ({marks})", (holder, *part))}
        return held

    def release(self, holder: str) -> list[str]:
        """Give up every claim ``holder`` has (a graceful stop): the next replica to look adopts them
        at once. Not a failed attempt: only crashes count towards max_attempts. This also frees a job
        that a stop interrupted between claiming it and launching it."""
        released = [row[0] for row in self.conn.execute(f"SELECT job_id FROM jobs WHERE holder = ? AND {ACTIVE}",
                                                        (holder,))]
        for job_id in released:
            self._write(f"UPDATE jobs SET holder = NULL, heartbeat = NULL, attempts = MAX(attempts - 1, 0) "
                        f"WHERE {MINE}", (job_id, holder))
        return released
