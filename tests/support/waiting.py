"""Polling for an eventually-true condition in tests, with a message naming what never happened."""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds until ``predicate()`` held; AssertionError naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
