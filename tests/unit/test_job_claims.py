"""When a job's claim may be adopted by another replica."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from services.common.job_claims import holder_id, orphaned, pid_alive, retire

HOST = socket.gethostname()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_holder_names_this_process():
    host, pid, instance = holder_id().rsplit(":", 2)
    assert (host, int(pid)) == (HOST, os.getpid()) and instance
    assert holder_id() != holder_id()  # a new instance each start


def test_unheld_and_stale_claims_are_orphaned():
    me = holder_id()
    assert orphaned(None, None, 100.0, 20.0, me)
    assert orphaned("elsewhere:7:abcd", 70.0, 100.0, 20.0, me)  # not renewed for 30 s > lease
    assert not orphaned("elsewhere:7:abcd", 90.0, 100.0, 20.0, me)  # another machine, renewing


def test_a_dead_process_of_this_host_is_adopted_at_once():
    me = holder_id()
    pid = dead_pid()
    assert not pid_alive(pid)
    assert orphaned(f"{HOST}:{pid}:abcd", 99.9, 100.0, 20.0, me)
    assert not orphaned(f"{HOST}:{os.getppid()}:abcd", 99.9, 100.0, 20.0, me)  # alive: wait for its lease


def test_an_earlier_incarnation_of_the_same_pid_is_dead():
    """Containers restart as PID 1 under the same host name: the instance tells them apart."""
    me, sibling = holder_id(), holder_id()  # two providers of one process are both alive
    pid = os.getpid()
    assert orphaned(f"{HOST}:{pid}:old", 99.9, 100.0, 20.0, me)
    assert not orphaned(sibling, 99.9, 100.0, 20.0, me)
    retire(sibling)
    assert orphaned(sibling, 99.9, 100.0, 20.0, me)
    assert orphaned(me, 99.9, 100.0, 20.0, me)  # asked only about jobs it is not running


def test_an_unparsable_holder_waits_for_its_lease():
    assert not orphaned("weird", 99.9, 100.0, 20.0, holder_id())
