"""Does adding inference replicas add throughput? 1, 2 and 3 replicas behind the gateway, with a
provider that waits on I/O like a remote inference server.

The provider is ``remote::vllm`` pointed at a STAND-IN REMOTE INFERENCE SERVER that this script
starts in its own process on 127.0.0.1 (aiohttp): ``GET /v1/models`` lists one model
(``standin-remote-llm``), ``POST /v1/chat/completions`` sleeps ``--latency-ms`` (default 50 ms) and
returns a fixed short completion with usage. It is a load target standing in for a vLLM server on
another machine (its latency does not grow with load; its own CPU is measured and shown), not a
test double of stackmesh logic: everything between the client and that HTTP server is the real mesh.
It also counts how many requests it holds at once ("peak at remote").

For N = 1, 2, 3 it starts a real mesh (registry + N inference replicas + gateway, tests/support/mesh.py),
waits until the model is discovered, and drives InferenceService/ChatCompletion through the gateway
with grpc.aio at several concurrency levels (default 8, 32, 128), recording each call's latency and
its ``stackmesh-served-by`` trailer (the replica that answered). Meshes run one at a time; the
order of N changes each round and the order of the concurrency levels each repeat. It prints, per
N and concurrency: calls, req/s, p50, p99, how requests spread over the replicas, and the CPU each
process used (from /proc/<pid>/stat, or psutil when installed); then the throughput ratios
N=2/N=1 and N=3/N=1 per concurrency (same-round pairs, median over rounds x repeats = 6 by
default), and where the limit is: the remote's latency, the machine's CPU, one process, or a cap on
requests that reach the remote.

    .venv/bin/python bench/replica_scaling.py            # ~2-4 min
    .venv/bin/python bench/replica_scaling.py --quick    # ~40 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402

from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc  # noqa: E402
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc  # noqa: E402
from tests.support.mesh import LocalMesh  # noqa: E402

PROVIDER_ID = "vllm"
STANDIN_MODEL = "standin-remote-llm"
MODEL_ID = f"{PROVIDER_ID}/{STANDIN_MODEL}"  # the identifier discovery registers
STANDIN_TEXT = "Hello from the stand-in remote inference server."
SERVED_BY = "stackmesh-served-by"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
CALL_TIMEOUT_S = 30.0
LATENCY_BOUND = 0.85  # req/s >= 85 % of concurrency/latency: the remote latency, not the mesh, limits
HELPS = 1.15  # a throughput ratio above this counts as "more replicas help"
SATURATED = 0.85  # >= 85 % of all cores busy (machine), or >= 0.85 core (one process)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~40 s smoke run (one round, fewer calls)")
    p.add_argument("--latency-ms", type=float, default=50.0,
                   help="how long the stand-in remote server takes per chat completion (default 50)")
    p.add_argument("--replicas", default="1,2,3", help="replica counts to compare (default 1,2,3; the first is the "
                                                      "base of the ratios)")
    p.add_argument("--concurrency", default="8,32,128", help="calls in flight, comma list (default 8,32,128)")
    p.add_argument("--rounds", type=int, help="rounds; each starts one mesh per replica count, in a different order "
                                              "(default 3, quick 1)")
    p.add_argument("--repeats", type=int, help="batches per concurrency per mesh (default 2, quick 3); "
                                               "every cell gets rounds x repeats batches")
    p.add_argument("--calls-per-slot", type=int, help="calls per batch = this x concurrency, within "
                                                      "[--min-calls, --max-calls] (default 25, quick 8)")
    p.add_argument("--min-calls", type=int, help="fewest calls in a batch (default 200, quick 64)")
    p.add_argument("--max-calls", type=int, help="most calls in a batch (default 1500, quick 400)")
    p.add_argument("--direct-calls", type=int, help="sequential calls straight to the stand-in server before each "
                                                    "mesh, pooled: the remote latency without the mesh (default 20, "
                                                    "quick 10)")
    p.add_argument("--stand-in-server", action="store_true", help=argparse.SUPPRESS)  # the child process
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = dict(rounds=(1, 3), repeats=(3, 2), calls_per_slot=(8, 25), min_calls=(64, 200),
                    max_calls=(400, 1500), direct_calls=(10, 20))
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if args.quick else full)
    args.replica_counts = [int(x) for x in args.replicas.split(",") if x.strip()]
    args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    if not args.replica_counts or not args.levels or min(args.replica_counts + args.levels) < 1:
        p.error("--replicas and --concurrency need positive integers")
    return args


def calls_for(args: argparse.Namespace, in_flight: int) -> int:
    return max(args.min_calls, min(args.max_calls, args.calls_per_slot * in_flight), in_flight)


# ============================================================================ stand-in remote server
def stand_in_server_main(port: int, latency_ms: float) -> int:
    """The stand-in remote inference server (runs in its own process): an OpenAI-compatible
    ``/v1/models`` and non-streaming ``/v1/chat/completions`` that waits ``latency_ms`` per call."""
    from aiohttp import web

    latency = latency_ms / 1000.0
    models_body = json.dumps({"object": "list", "data": [
        {"id": STANDIN_MODEL, "object": "model", "owned_by": "stand-in-remote-server", "created": 0}]}).encode()
    reply_body = json.dumps({
        "id": "chatcmpl-standin", "object": "chat.completion", "created": 1700000000, "model": STANDIN_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": STANDIN_TEXT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19}}).encode()
    state = {"chat_requests": 0, "rejected": 0, "in_flight": 0, "peak_in_flight": 0}

    def error(status: int, message: str) -> web.Response:
        state["rejected"] += 1
        return web.Response(status=status, content_type="application/json",
                            body=json.dumps({"error": {"message": message}}).encode())

    async def models(_: web.Request) -> web.Response:
        return web.Response(body=models_body, content_type="application/json")

    async def chat(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "body is not JSON")
        if body.get("model") != STANDIN_MODEL:
            return error(404, f"model {body.get('model')!r} is not served here")
        if body.get("stream"):
            return error(400, "the stand-in server does not stream")
        state["in_flight"] += 1
        state["peak_in_flight"] = max(state["peak_in_flight"], state["in_flight"])
        try:
            await asyncio.sleep(latency)
        finally:
            state["in_flight"] -= 1
        state["chat_requests"] += 1
        return web.Response(body=reply_body, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        out = dict(state)
        if request.query.get("reset"):
            state["peak_in_flight"] = state["in_flight"]
        return web.json_response(out)

    async def serve() -> int:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        print(f"READY {runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        parent = os.getppid()
        while not stop.is_set() and os.getppid() == parent:  # never outlive the benchmark
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        await runner.cleanup()
        return 0

    return B.run(serve)


class StandInServer:
    """The stand-in remote inference server's process, seen from the benchmark."""

    def __init__(self, directory: pathlib.Path, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self.log_path = directory / "stand-in-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> "StandInServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "--stand-in-server",
             "--latency-ms", str(self.latency_ms)], stdout=subprocess.PIPE, stderr=log, cwd=B.ROOT)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline().decode(errors="replace").strip()
                if line.startswith("READY "):
                    self.port = int(line.split()[1])
                    return self
            if self.process.poll() is not None:
                break
        raise RuntimeError(f"the stand-in remote server did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ============================================================================ CPU accounting
_TICK = os.sysconf("SC_CLK_TCK")
try:
    import psutil  # type: ignore[import-not-found]
except ImportError:  # not a dependency of stackmesh: /proc is enough on Linux
    psutil = None


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads) so far."""
    if psutil is not None:
        try:
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state) of proc(5)
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime (14) + stime (15)


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent not idle (every process, ours and others)."""
    parts = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    return (sum(parts[:8]) - idle) / _TICK  # user nice system idle iowait irq softirq steal


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {label: process_cpu_seconds(pid) for label, pid in pids.items()}
    snap["machine"] = machine_busy_seconds()
    return snap


# ============================================================================ measurement
@dataclasses.dataclass
class Cell:
    """Every batch of one (replica count, concurrency), plus what the batches saw besides latency."""

    batches: list[B.Batch] = dataclasses.field(default_factory=list)
    served: list[collections.Counter[str]] = dataclasses.field(default_factory=list)
    cpu: list[dict[str, float]] = dataclasses.field(default_factory=list)  # CPU seconds per label, per batch
    peak_at_server: list[int] = dataclasses.field(default_factory=list)


class ChatLoad:
    """ChatCompletion through the gateway; each answer's served-by trailer is counted."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = inference_pb2_grpc.InferenceServiceStub(channel)
        self.request = ipb.ChatCompletionRequest(
            model=MODEL_ID, messages=[ipb.ChatMessage(role="user", content="Say hello.")],
            sampling=ipb.SamplingParams(max_tokens=16, temperature=0.0))
        self.served: collections.Counter[str] = collections.Counter()

    async def call(self) -> None:
        call = self.stub.ChatCompletion(self.request, timeout=CALL_TIMEOUT_S)
        reply = await call
        if not reply.choices or reply.choices[0].message.content != STANDIN_TEXT:
            raise RuntimeError(f"unexpected reply: {str(reply)[:200]!r}")
        trailers = await call.trailing_metadata()
        self.served[(trailers.get(SERVED_BY) if trailers is not None else None) or "(no served-by trailer)"] += 1


async def server_stats(http: Any, server: StandInServer, reset: bool = False) -> dict[str, int]:
    async with http.get(f"http://127.0.0.1:{server.port}/stats", params={"reset": "1"} if reset else {}) as resp:
        return await resp.json()


async def direct_remote_latency(server: StandInServer, calls: int) -> B.Batch:
    """The stand-in remote server called straight from this process (aiohttp, sequential): what a
    ChatCompletion costs with no mesh at all; the floor under every mesh p50."""
    import aiohttp

    body = {"model": STANDIN_MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16,
            "temperature": 0.0}
    async with aiohttp.ClientSession() as http:
        async def call() -> None:
            async with http.post(f"{server.base_url}/chat/completions", json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                await resp.json()

        await B.sequential(call, 3)
        return await B.sequential(call, calls)


async def wait_for_model(gateway: grpc.aio.Channel, timeout: float) -> float:
    """Seconds until the gateway's ModelsService knows the stand-in's model."""
    stub = registry_pb2_grpc.ModelsServiceStub(gateway)
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        try:
            await stub.GetModel(rpb.GetModelRequest(model_id=MODEL_ID), timeout=5)
            return time.monotonic() - started
        except grpc.aio.AioRpcError as err:
            last = f"{err.code().name}: {err.details()}"
        await asyncio.sleep(0.1)
    raise RuntimeError(f"model {MODEL_ID} was not discovered within {timeout:.0f} s; last GetModel: {last}")


async def warm_up(load: ChatLoad, replicas: set[str], max_in_flight: int, timeout: float) -> tuple[int, str]:
    """Call until every replica has answered twice, then once at the highest concurrency.
    Returns (failed calls, first failure): after discovery no call should fail."""
    load.served.clear()
    errors, first = 0, ""
    deadline = time.monotonic() + timeout
    while any(load.served[r] < 2 for r in replicas):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every replica answered within {timeout:.0f} s of discovery: served-by counts "
                               f"{dict(load.served)}; {errors} failed calls, first: {first or '-'}")
        batch = await B.concurrent(load.call, 4 * len(replicas), len(replicas))
        errors += batch.errors
        first = first or batch.first_error
    batch = await B.concurrent(load.call, 2 * max_in_flight, max_in_flight)
    return errors + batch.errors, first or batch.first_error


async def measure_mesh(args: argparse.Namespace, mesh: LocalMesh, server: StandInServer, cells: dict[tuple[int, int], Cell],
                       notes: list[str], direct: list[B.Batch], round_index: int) -> float:
    """Measure every concurrency level on one mesh; returns when (monotonic) the mesh was ready."""
    import aiohttp

    n = len(mesh.inference)
    labels = {f"inference@{p.address}": f"r{i + 1}" for i, p in enumerate(mesh.inference)}
    pids = {"gateway": mesh.gateway.process.pid, "registry": mesh.registry.process.pid,
            **{labels[f"inference@{p.address}"]: p.process.pid for p in mesh.inference},
            "stand-in server": server.process.pid, "bench client": os.getpid()}
    channel = grpc.aio.insecure_channel(mesh.url, options=CHANNEL_OPTIONS)
    try:
        async with aiohttp.ClientSession() as http:
            discovered = await wait_for_model(channel, 60)
            load = ChatLoad(channel)
            warm_errors, warm_first = await warm_up(load, set(labels), max(args.levels), 60)
            ready_at = time.monotonic()
            direct.append(await direct_remote_latency(server, args.direct_calls))
            B.progress(f"N={n}: model discovered {discovered:.1f} s after the gateway was up; warm-up done")
            if warm_errors:
                notes.append(f"N={n} round {round_index + 1}: {warm_errors} ChatCompletion calls failed during warm-up "
                             f"(after GetModel found {MODEL_ID}); first: {warm_first}")
            for repeat in range(args.repeats):
                for in_flight in B.rotated(args.levels, round_index + repeat):
                    cell = cells.setdefault((n, in_flight), Cell())
                    load.served.clear()
                    await server_stats(http, server, reset=True)
                    before = cpu_snapshot(pids)
                    batch = await B.concurrent(load.call, calls_for(args, in_flight), in_flight)
                    after = cpu_snapshot(pids)
                    stats = await server_stats(http, server)
                    cell.batches.append(batch)
                    cell.served.append(collections.Counter({labels.get(k, k): v for k, v in load.served.items()}))
                    cell.cpu.append({k: after[k] - before[k] for k in after})
                    cell.peak_at_server.append(stats["peak_in_flight"])
                    B.progress(f"N={n} c={in_flight}: {len(batch.latencies)} calls, {batch.rps:.0f} req/s, "
                               f"p50 {batch.p50 * 1e3:.1f} ms" + (f", {batch.errors} FAILED" if batch.errors else ""))
        return ready_at
    finally:
        await channel.close()


# ============================================================================ report
def spread(cell: Cell, n: int) -> tuple[str, float, float, list[str]]:
    """(shares per replica, pooled max/min, worst batch's max/min, unexpected served-by values)."""
    replicas = [f"r{i + 1}" for i in range(n)]
    pooled: collections.Counter[str] = collections.Counter()
    for c in cell.served:
        pooled.update(c)
    total = sum(pooled.values()) or 1
    shares = "/".join(f"{100 * pooled[r] / total:.0f}" for r in replicas)
    strange = sorted(k for k in pooled if k not in replicas)

    def ratio(counts: collections.Counter[str]) -> float:
        values = [counts[r] for r in replicas]
        return float("inf") if min(values) == 0 else max(values) / min(values)

    return shares + " %", ratio(pooled), max((ratio(c) for c in cell.served), default=float("nan")), strange


def cores(cell: Cell) -> dict[str, float]:
    """CPU cores each label kept busy over the cell's batches (CPU seconds / wall seconds, pooled)."""
    wall = sum(b.wall for b in cell.batches)
    keys = cell.cpu[0].keys() if cell.cpu else []
    return {k: sum(c[k] for c in cell.cpu) / wall for k in keys} if wall else {}


def fmt_ratio(value: float) -> str:
    return "inf" if value == float("inf") else B.fmt(value)


def report(args: argparse.Namespace, cells: dict[tuple[int, int], Cell], setup: dict[int, list[float]],
           direct: B.Batch) -> list[str]:
    ncpu = os.cpu_count() or 1
    remote_ms = direct.p50 * 1e3  # the remote's latency as a client sees it, without the mesh
    latency_s = remote_ms / 1000.0
    results = B.Results()
    for (n, c), cell in cells.items():
        for batch in cell.batches:
            results.add(f"c{c}", f"N={n}", batch)
    problems: list[str] = []

    print()
    print(f"DIRECT to the stand-in remote server (aiohttp from this process, sequential, no mesh, before each mesh): "
          f"{len(direct.latencies)} calls, p50 {remote_ms:.2f} ms, p99 {B.percentile(direct.latencies, 99) * 1e3:.2f} ms "
          f"(--latency-ms {args.latency_ms:g})")
    print(f"THROUGHPUT AND LATENCY through the gateway (ChatCompletion); latency bound = concurrency / {remote_ms:.1f} ms")
    rows = []
    for c in args.levels:
        for n in args.replica_counts:
            cell = cells.get((n, c))
            if cell is None:
                continue
            s = results.summary(f"c{c}", f"N={n}")
            shares, pooled, worst, strange = spread(cell, n)
            if strange:
                problems.append(f"N={n} c={c}: answers tagged by unknown replicas {strange}")
            rows.append([f"c={c}", n, int(s["calls"]), s["rps"], f"{100 * s['rps'] / (c / latency_s):.0f} %",
                         s["p50_ms"], s["p99_ms"], s["p50_ms"] - remote_ms, shares, fmt_ratio(pooled),
                         fmt_ratio(worst), max(cell.peak_at_server)])
    print(B.table(["conc", "N", "calls", "req/s", "of bound", "p50 ms", "p99 ms", "p50-remote ms",
                   "share r1/r2/r3", "max/min", "worst batch", "peak at remote"], rows))
    print("   req/s and p50: median over batches; p99: all calls pooled; p50-remote: p50 minus the direct p50 = what the mesh "
          "adds;\n   share: requests each replica answered (served-by trailer); max/min: busiest/idlest "
          "replica, pooled and in the worst batch;\n   peak at remote: most chat requests the stand-in server held "
          "at once (concurrency that reached the remote).")

    print()
    print("CPU: cores each process kept busy while the batches ran (CPU s / wall s; "
          f"{'psutil' if psutil else '/proc/<pid>/stat'}); the machine has {ncpu} cores")
    rows = []
    for c in args.levels:
        for n in args.replica_counts:
            cell = cells.get((n, c))
            if cell is None:
                continue
            k = cores(cell)
            replicas = [k[f"r{i + 1}"] for i in range(n)]
            ours = sum(v for key, v in k.items() if key != "machine")
            ms = cpu_ms_per_call(cell)
            rows.append([f"c={c}", n, k["gateway"], sum(replicas), max(replicas), k["registry"], k["stand-in server"],
                         k["bench client"], k["machine"], k["machine"] - ours,
                         ms["gateway"], ms["inference"], ms["bench client"], ms["stand-in server"]])
    print(B.table(["conc", "N", "gateway", "inference", "busiest repl", "registry", "stand-in", "client",
                   "machine", "other procs", "gw ms/call", "inf ms/call", "client ms/call",
                   "stand-in ms/call"], rows))
    print("   inference = all replicas together; machine = every process on the box (/proc/stat); other procs = machine "
          "minus the processes listed;\n   ms/call = CPU milliseconds per call (inference: all replicas together).")

    base = args.replica_counts[0]
    others = args.replica_counts[1:]
    print()
    print(f"RATIOS throughput N/N={base} (median over same-index batch pairs; each pair measured in the same round; "
          f"> {HELPS:.2f} = more replicas help)")
    rows = []

    def best(c: int, n: int) -> float:
        return max((b.rps for b in results.get(f"c{c}", f"N={n}")), default=float("nan"))

    for c in args.levels:
        row: list[Any] = [f"c={c}", results.summary(f"c{c}", f"N={base}")["rps"]]
        for n in others:
            row.append(results.ratio(f"c{c}", f"N={n}", f"N={base}", "rps"))
        for n in others:
            row.append(results.ratio(f"c{c}", f"N={n}", f"N={base}", "p50"))
        row.append(" / ".join(f"{best(c, n):.0f}" for n in args.replica_counts))
        rows.append(row)
    print(B.table(["conc", f"req/s N={base}", *(f"req/s N={n}/N={base}" for n in others),
                   *(f"p50 N={n}/N={base}" for n in others),
                   "best batch req/s N=" + "/".join(str(n) for n in args.replica_counts)], rows))
    print("   best batch: the fastest single batch of each N (the least disturbed by other load on this shared machine); "
          "when the\n   machine is busy with other work the same-round ratios swing, and 'CPU ms/call' above is the steadier "
          "measure.")

    print()
    print("WHERE THE LIMIT IS")
    for c in args.levels:
        print(f"   c={c}: {verdict(args, cells, results, c, ncpu, remote_ms)}")
    print()
    for n, times in sorted(setup.items()):
        print(f"   N={n}: mesh start + model discovery + warm-up took {B.fmt(B.median(times), 1)} s "
              f"(median of {len(times)})")

    for (n, c), cell in sorted(cells.items()):
        shares, pooled, worst, _ = spread(cell, n)
        if n > 1 and pooled > 1.5:
            problems.append(f"N={n} c={c}: requests spread unevenly over replicas ({shares}, max/min {fmt_ratio(pooled)})")
    return problems


def cpu_ms_per_call(cell: Cell) -> dict[str, float]:
    """CPU milliseconds per call of each group (inference: every replica together)."""
    calls = sum(len(b.latencies) + b.errors for b in cell.batches) or 1
    total = {key: sum(x[key] for x in cell.cpu) for key in cell.cpu[0]}
    inference = sum(v for key, v in total.items() if key.startswith("r") and key[1:].isdigit())
    return {"gateway": 1e3 * total["gateway"] / calls, "inference": 1e3 * inference / calls,
            "registry": 1e3 * total["registry"] / calls, "bench client": 1e3 * total["bench client"] / calls,
            "stand-in server": 1e3 * total["stand-in server"] / calls}


def verdict(args: argparse.Namespace, cells: dict[tuple[int, int], Cell], results: B.Results, c: int, ncpu: int,
            remote_ms: float) -> str:
    """One paragraph: do replicas help at this concurrency, and what limits throughput. Rules, in order:
    N=base within 85 % of the latency bound -> latency; fewer calls reached the remote than were in
    flight and the remote held ~that peak on average (Little's law) -> a cap on requests to the remote;
    the machine >= 85 % busy and the benchmark's processes on >= half of it -> the machine's CPU; the
    machine busy mostly with other processes -> latency plus CPU contention; one process >= 0.85 core
    -> that process; else: not CPU."""
    base, top = args.replica_counts[0], args.replica_counts[-1]
    if (base, c) not in cells or (top, c) not in cells:
        return "not measured"
    bound = c / (remote_ms / 1e3)
    rps = {n: results.summary(f"c{c}", f"N={n}")["rps"] for n in (base, top)}
    gains = {n: results.ratio(f"c{c}", f"N={n}", f"N={base}", "rps") for n in args.replica_counts[1:]}
    gain_text = ", ".join(f"N={n}/N={base} {B.fmt(g)}x" for n, g in gains.items())
    helping = [f"N={n}" for n, g in gains.items() if g >= HELPS]
    head = (f"measured gain {gain_text}: " + (f"above {HELPS:.2f}x for {', '.join(helping)}." if helping
                                              else f"no replica count gains more than {HELPS:.2f}x."))
    added = results.summary(f"c{c}", f"N={base}")["p50_ms"] - remote_ms
    if rps[base] >= LATENCY_BOUND * bound:
        return (f"{head} Latency-bound: with {c} calls in flight and {remote_ms:.1f} ms at the remote, at most "
                f"{bound:.0f} req/s are possible and N={base} already gives {rps[base]:.0f} "
                f"({100 * rps[base] / bound:.0f} %; the mesh adds {added:.1f} ms at p50), so no replica count can "
                f"add more than {bound / rps[base]:.2f}x here.")
    k = {n: cores(cells[(n, c)]) for n in (base, top)}
    ours = {n: {key: v for key, v in k[n].items() if key != "machine"} for n in (base, top)}
    mine = {n: sum(ours[n].values()) for n in (base, top)}
    others = {n: k[n]["machine"] - mine[n] for n in (base, top)}
    ms = {n: cpu_ms_per_call(cells[(n, c)]) for n in (base, top)}
    per_call = {n: sum(ms[n].values()) for n in (base, top)}
    replicas = {key: v for key, v in ours[top].items() if key.startswith("r") and key[1:].isdigit()}
    groups = {"gateway": ours[top]["gateway"], f"inference x{len(replicas)}": sum(replicas.values()),
              "bench client": ours[top]["bench client"], "stand-in": ours[top]["stand-in server"],
              "registry": ours[top]["registry"], "other processes": others[top]}
    shares = ", ".join(f"{name} {v:.2f}" for name, v in sorted(groups.items(), key=lambda kv: -kv[1]))
    busiest = max(ours[top].items(), key=lambda kv: kv[1])
    queueing = (f"N={base} reaches {100 * rps[base] / bound:.0f} % of the {bound:.0f} req/s latency bound (p50 "
                f"+{added:.0f} ms over the remote's).")
    peaks = {n: max(cells[(n, c)].peak_at_server) for n in args.replica_counts if (n, c) in cells}
    at_remote = rps[base] * remote_ms / 1e3  # Little's law: calls the remote holds on average
    if peaks[base] < 0.9 * c and at_remote >= 0.9 * peaks[base]:
        per = peaks[base] / base
        return (f"{head} {queueing} Limit: concurrent requests to the remote, not CPU (the benchmark's processes use "
                f"{mine[base]:.2f} of {ncpu} cores at N={base}). At N={base} never more than {peaks[base]} of the {c} "
                f"calls in flight reached the remote (~{per:.0f} per replica), and on average {at_remote:.0f} were there "
                f"(req/s x remote latency): those slots stayed full and the other calls waited inside the mesh. Peak "
                f"at remote per N: {', '.join(f'N={n} {p}' for n, p in peaks.items())}. Each replica brings its own "
                f"~{per:.0f}" + (", which is why replicas help here." if helping else "."))
    if k[top]["machine"] >= SATURATED * ncpu and mine[top] >= 0.5 * ncpu:
        more_cpu = mine[top] / mine[base]
        cheaper = per_call[base] / per_call[top]
        return (f"{head} {queueing} CPU-bound machine: at N={top} {k[top]['machine']:.2f} of {ncpu} cores are busy "
                f"({shares}); no single process is at one core (busiest: {busiest[0]} {busiest[1]:.2f}), so no "
                f"replica's event loop is the limit. Throughput = CPU the benchmark's processes get / CPU one call "
                f"costs in them: N={base} {mine[base]:.2f} cores / {per_call[base]:.2f} ms = "
                f"{1e3 * mine[base] / per_call[base]:.0f} req/s, N={top} {mine[top]:.2f} / {per_call[top]:.2f} ms = "
                f"{1e3 * mine[top] / per_call[top]:.0f} (measured {rps[base]:.0f} and {rps[top]:.0f}); so N={top}/N={base} "
                f"~ {more_cpu:.2f} (CPU obtained, shared with other processes on the machine, which took "
                f"{others[base]:.2f} -> {others[top]:.2f} cores) x {cheaper:.2f} (CPU per call N={base} / N={top}; "
                f"gateway {ms[base]['gateway']:.2f} -> {ms[top]['gateway']:.2f} ms, inference "
                f"{ms[base]['inference']:.2f} -> {ms[top]['inference']:.2f} ms, all replicas). A replica adds no CPU on this machine; with all {ncpu} cores to themselves these "
                f"processes would top out near {1e3 * ncpu / per_call[top]:.0f} req/s at N={top}. Per call the "
                f"inference tier costs {ms[top]['inference'] / ms[top]['gateway']:.1f}x the gateway.")
    if k[top]["machine"] >= SATURATED * ncpu:
        return (f"{head} {queueing} The benchmark's processes use only {mine[top]:.2f} of {ncpu} cores at N={top} "
                f"({shares}): the calls wait on the remote's latency and for a CPU that other processes hold "
                f"({others[top]:.2f} cores), not on any one replica, so more replicas cannot help.")
    if busiest[1] >= SATURATED:
        return (f"{head} {queueing} One process is the limit: at N={top} {busiest[0]} uses {busiest[1]:.2f} "
                f"cores (one Python event loop) while {ncpu - k[top]['machine']:.2f} cores are idle ({shares}).")
    return (f"{head} {queueing} Neither the machine ({k[top]['machine']:.2f} of {ncpu} cores) nor one process "
            f"({busiest[0]} {busiest[1]:.2f}) is saturated at N={top} ({shares}): the limit is not CPU; compare "
            f"'peak at remote' with {c} to see where calls wait.")


# ============================================================================ main
def run_mesh(args: argparse.Namespace, n: int, server: StandInServer, cells: dict[tuple[int, int], Cell],
             notes: list[str], setup: dict[int, list[float]], direct: list[B.Batch], round_index: int) -> None:
    providers = {"inference": [{"provider_id": PROVIDER_ID, "provider_type": "remote::vllm",
                                "config": {"base_url": server.base_url, "refresh_models": False}}]}
    with tempfile.TemporaryDirectory(prefix=f"bench-replicas{n}-") as tmp:
        mesh = LocalMesh(pathlib.Path(tmp), providers=providers, inference_replicas=n)
        try:
            B.progress(f"round {round_index + 1}/{args.rounds}: starting registry, {n} inference replica(s), gateway ...")
            t0 = time.monotonic()
            mesh.start()
            ready_at = B.run(lambda: measure_mesh(args, mesh, server, cells, notes, direct, round_index))
            setup.setdefault(n, []).append(ready_at - t0)
        except BaseException:
            for process in (mesh.registry, *mesh.inference, mesh.gateway):
                if process.process is not None and process.process.poll() is not None:
                    print(f"-- {process.name} {process.address} exited with {process.process.returncode}; log tail:\n"
                          f"{process.log_tail()}")
            raise
        finally:
            mesh.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stand_in_server:
        return stand_in_server_main(args.port, args.latency_ms)
    B.header("replica_scaling: ChatCompletion through the gateway with 1..N inference replicas (remote::vllm -> "
             "stand-in remote inference server)",
             replicas=args.replicas, concurrency=args.concurrency, latency_ms=args.latency_ms, rounds=args.rounds,
             repeats=args.repeats, calls="/".join(str(calls_for(args, c)) for c in args.levels), quick=args.quick)
    started = time.monotonic()
    cells: dict[tuple[int, int], Cell] = {}
    notes: list[str] = []
    setup: dict[int, list[float]] = {}
    rc = 0
    with tempfile.TemporaryDirectory(prefix="bench-standin-") as tmp:
        server = StandInServer(pathlib.Path(tmp), args.latency_ms)
        try:
            server.start()
            B.progress(f"stand-in remote inference server on {server.base_url} ({args.latency_ms:g} ms per completion)")
            direct: list[B.Batch] = []
            for r in range(args.rounds):
                for n in B.rotated(args.replica_counts, r):
                    run_mesh(args, n, server, cells, notes, setup, direct, r)
            failed = [b.first_error for b in direct if b.errors]
            if failed:
                raise RuntimeError(f"the stand-in server failed when called directly: {failed[0]}")
            pooled = B.Batch([x for b in direct for x in b.latencies], sum(b.wall for b in direct))
            problems = report(args, cells, setup, pooled)
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/stats", timeout=5) as resp:
                stats = json.load(resp)
        except Exception as err:  # noqa: BLE001 - reported with the logs above
            print(f"FAILED: {type(err).__name__}: {err}")
            if server.process is not None and server.process.poll() is not None:
                print(f"-- stand-in server exited with {server.process.returncode}; log tail:\n{server.log_tail()}")
            rc, problems, stats = 1, [], None
        finally:
            server.stop()
    if stats is not None:
        print(f"   stand-in remote server: {stats['chat_requests']:,} chat completions answered, "
              f"{stats['rejected']} rejected (includes warm-up)")
        if stats["rejected"]:
            problems.append(f"the stand-in server rejected {stats['rejected']} requests (see its answers above)")
    for line in notes:
        print(f"NOTE {line}")
    for line in problems:
        print(f"PROBLEM {line}")
    errors = B.Results()
    for (n, c), cell in cells.items():
        for batch in cell.batches:
            errors.add(f"c={c}", f"N={n}", batch)
    for line in errors.errors():
        print(f"ERROR {line}")
        rc = 1
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
