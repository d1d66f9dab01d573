"""Shared pieces of the benchmarks in bench/: load loops, statistics, rounds, tables.

Measurement rules every script follows (this machine is small, shared and noisy):
- variants are interleaved in rounds (the order alternates each round), never run back to back;
- a variant's p50 and requests/s are the MEDIAN over rounds of that round's value; its p99 is taken
  over all its samples pooled (a per-round p99 of a few dozen samples would mean nothing);
- a ratio A/B is the median over rounds of (A in round r) / (B in round r): both halves of each
  ratio were measured seconds apart, under the same background load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Awaitable, Callable, Iterable, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # stackmesh, services, tests.support.mesh

os.environ.setdefault("HF_HUB_OFFLINE", "1")

Call = Callable[[], Awaitable[Any]]


# ----------------------------------------------------------------------------- event loop
def run(main: Callable[[], Awaitable[int]]) -> int:
    """asyncio.run on uvloop when it is installed (the mesh's services use it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


# ----------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


@dataclasses.dataclass
class Batch:
    """One measured batch: per-call latencies (seconds) and the batch's wall time."""

    latencies: list[float]
    wall: float
    errors: int = 0
    first_error: str = ""

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall > 0 else float("nan")


class CallFailed(RuntimeError):
    pass


def _describe(err: BaseException) -> str:
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{code().name}: {details()}"
        except Exception:  # noqa: BLE001
            pass
    return f"{type(err).__name__}: {err}"


async def sequential(call: Call, n: int) -> Batch:
    latencies: list[float] = []
    errors, first = 0, ""
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            await call()
        except Exception as err:  # noqa: BLE001 - counted and reported, never hidden
            errors += 1
            first = first or _describe(err)
            continue
        latencies.append(time.perf_counter() - t0)
    return Batch(latencies, time.perf_counter() - start, errors, first)


async def concurrent(call: Call, total: int, in_flight: int) -> Batch:
    """``total`` calls with ``in_flight`` of them outstanding at every moment."""
    latencies: list[float] = []
    state = {"left": total, "errors": 0, "first": ""}

    async def worker() -> None:
        while state["left"] > 0:
            state["left"] -= 1
            t0 = time.perf_counter()
            try:
                await call()
            except Exception as err:  # noqa: BLE001
                state["errors"] += 1
                state["first"] = state["first"] or _describe(err)
                continue
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(in_flight, total))))
    return Batch(latencies, time.perf_counter() - start, state["errors"], state["first"])


# ----------------------------------------------------------------------------- rounds
class Results:
    """Batches per (workload, variant), in round order, plus the ratio definitions."""

    def __init__(self) -> None:
        self.batches: dict[tuple[str, str], list[Batch]] = {}

    def add(self, workload: str, variant: str, batch: Batch) -> None:
        self.batches.setdefault((workload, variant), []).append(batch)

    def get(self, workload: str, variant: str) -> list[Batch]:
        return self.batches.get((workload, variant), [])

    def errors(self) -> list[str]:
        out = []
        for (workload, variant), batches in self.batches.items():
            n = sum(b.errors for b in batches)
            if n:
                first = next(b.first_error for b in batches if b.errors)
                out.append(f"{workload} / {variant}: {n} failed calls; first: {first}")
        return out

    def summary(self, workload: str, variant: str) -> dict[str, float]:
        batches = self.get(workload, variant)
        pooled = [x for b in batches for x in b.latencies]
        return {
            "calls": float(len(pooled)),
            "p50_ms": median(b.p50 for b in batches) * 1e3,
            "p99_ms": percentile(pooled, 99) * 1e3,
            "rps": median(b.rps for b in batches),
            "errors": float(sum(b.errors for b in batches)),
        }

    def ratio(self, workload: str, num: str, den: str, metric: str) -> float:
        """Median over rounds of num/den for metric 'p50' or 'rps'."""
        pairs = zip(self.get(workload, num), self.get(workload, den))
        values = []
        for a, b in pairs:
            x, y = getattr(a, metric), getattr(b, metric)
            if y and y == y and x == x:
                values.append(x / y)
        return median(values)

    def diff_ms(self, workload: str, num: str, den: str) -> float:
        """Median over rounds of p50(num) - p50(den), in ms."""
        pairs = zip(self.get(workload, num), self.get(workload, den))
        return median((a.p50 - b.p50) * 1e3 for a, b in pairs)


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """The variants in a different order each round, so none always runs first (or last)."""
    k = round_index % len(items)
    out = list(items[k:]) + list(items[:k])
    return out if round_index % 2 == 0 else out[::-1]


# ----------------------------------------------------------------------------- output
def fmt(value: float, digits: int = 2) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def header(title: str, **facts: Any) -> None:
    try:
        import grpc

        grpc_version = grpc.__version__
    except ImportError:  # pragma: no cover
        grpc_version = "?"
    load = os.getloadavg()
    print(f"== {title}")
    print(f"   python {sys.version.split()[0]}, grpcio {grpc_version}, {loop_name()}, {os.cpu_count()} CPUs, "
          f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if facts:
        print("   " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    sys.stdout.flush()


def progress(message: str) -> None:
    print(f"   .. {message}", file=sys.stderr, flush=True)


def rss_mib(pid: int) -> float:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def report_mesh_failure(err: BaseException, mesh: Any) -> None:
    """Print why a benchmark against a LocalMesh failed, with each process's log tail."""
    print(f"FAILED: {type(err).__name__}: {err}")
    for process in (mesh.registry, *mesh.inference, *mesh.services.values(), mesh.gateway):
        if process.process is None:
            continue
        code = process.process.poll()
        state = f"exited with {code}" if code is not None else "running"
        print(f"-- {process.name} {process.address} ({state}); log tail:\n{process.log_tail(15)}")
