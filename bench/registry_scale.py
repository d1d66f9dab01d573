"""How the registry behaves at 10 models vs 100,000 models.

Two registry processes run side by side (tests/support/mesh.py ServiceProcess; one inline
sentence-transformers inference provider configured so models have a provider; no model is loaded):
SMALL holds 10 models, LARGE holds --models (100,000). Steps:

1. registration: LARGE is filled with concurrent ModelsService/RegisterModel calls (throughput per
   concurrency level, and GetModel latency measured while the writes run). By default only the first
   --rpc-models (20,000) go through RegisterModel, because each RegisterModel is one fsync'd SQLite
   commit (see the note printed); the rest are written into LARGE's SQLite store, with the registry
   stopped, in large transactions (the store class the registry itself uses), and the registry
   restarts from it. --rpc-models all registers every model through RegisterModel.
2. both registries restart: time to healthy (loading the store) and memory.
3. interleaved rounds, SMALL and LARGE alternating:
   - watch propagation: a watcher on RegistryService/WatchResources sees a RegisterModel's PUT event
     N ms after the RegisterModel call returns (~50 samples; the model is unregistered again so the
     size stays put);
   - ListModels, every page (the first list after a write, and again with nothing written between);
   - GetModel and RegistryService/ResolveResource latency on random identifiers;
   - a new watcher's full snapshot (WatchResources from revision 0 up to SYNCED), what a gateway or
     service replica pays when it (re)joins.

Prints the table and the ratios 100k/10 (median of same-round ratios).

    .venv/bin/python bench/registry_scale.py            # ~2-3 min
    .venv/bin/python bench/registry_scale.py --quick    # ~25 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import math
import pathlib
import random
import sys
import tempfile
import time
from typing import Any

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402

from stackmesh.common.v1 import common_pb2  # noqa: E402
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc  # noqa: E402
from tests.support.mesh import ServiceProcess, free_port, write_config  # noqa: E402

PROVIDERS = {"inference": [{"provider_id": "sentence-transformers",
                            "provider_type": "inline::sentence-transformers", "config": {}}]}
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]
MODEL = common_pb2.RESOURCE_TYPE_MODEL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~25 s smoke run")
    p.add_argument("--small", type=int, default=10, help="models in the small registry (default 10)")
    p.add_argument("--models", type=int, default=100_000, help="models in the large registry (default 100,000)")
    p.add_argument("--rpc-models", default=None,
                   help="how many of them go through RegisterModel ('all' or a number; default 20,000, quick 2,000)")
    p.add_argument("--register-concurrency", default="1,8,64",
                   help="in-flight RegisterModel calls; the last level registers the bulk, the others a probe")
    p.add_argument("--probe", type=int, default=None, help="registrations per probe level (default 500, quick 200)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    p.add_argument("--calls", type=int, help="GetModel / ResolveResource calls per registry per round (default 300)")
    p.add_argument("--watch-samples", type=int, help="watch propagation samples per registry in all (default 50)")
    p.add_argument("--page-size", type=int, default=0, help="ListModels page size (0 = the server's default)")
    args = p.parse_args(argv)
    for name, (q, full) in dict(rounds=(2, 5), calls=(100, 300), watch_samples=(20, 50), probe=(200, 500)).items():
        if getattr(args, name) is None:
            setattr(args, name, q if args.quick else full)
    if args.rpc_models is None:
        args.rpc_models = min(args.models, 2_000 if args.quick else 20_000)
    elif args.rpc_models == "all":
        args.rpc_models = args.models
    else:
        args.rpc_models = min(int(args.rpc_models), args.models)
    args.levels = [int(x) for x in str(args.register_concurrency).split(",") if x.strip()]
    return args


def model_id(prefix: str, i: int) -> str:
    return f"{prefix}-{i:06d}"


class Registry:
    """One registry process plus the client side the benchmark keeps for it."""

    def __init__(self, label: str, directory: pathlib.Path, size: int, prefix: str) -> None:
        self.label, self.size, self.prefix = label, size, prefix
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = write_config(directory, providers=PROVIDERS, ports={"registry": self.port})
        self.process = ServiceProcess("registry", self.config, self.port, directory)
        self.startup_s = float("nan")
        self.channel: grpc.aio.Channel | None = None
        self.watch_channel: grpc.aio.Channel | None = None
        self.watch_task: asyncio.Task[None] | None = None
        self.waiters: dict[tuple[int, str], asyncio.Future[float]] = {}

    @property
    def db_path(self) -> pathlib.Path:
        return self.directory / "registry.db"

    def start(self) -> None:
        t0 = time.perf_counter()
        self.process.start(timeout=300)
        self.startup_s = time.perf_counter() - t0

    async def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.process.address, options=CHANNEL_OPTIONS)
        self.models = registry_pb2_grpc.ModelsServiceStub(self.channel)
        self.registry = registry_pb2_grpc.RegistryServiceStub(self.channel)

    async def close(self) -> None:
        if self.watch_task is not None:
            self.watch_task.cancel()
            try:
                await self.watch_task
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            self.watch_task = None
        for ch in (self.channel, self.watch_channel):
            if ch is not None:
                await ch.close()
        self.channel = self.watch_channel = None

    # -------------------------------------------------------------- watch propagation
    async def start_watch(self) -> None:
        """A watcher from the current revision (no snapshot) on its own connection."""
        self.watch_channel = grpc.aio.insecure_channel(self.process.address, options=CHANNEL_OPTIONS)
        stub = registry_pb2_grpc.RegistryServiceStub(self.watch_channel)
        revision = (await self.registry.GetRevision(rpb.GetRevisionRequest(), timeout=10)).revision
        synced = asyncio.get_running_loop().create_future()

        async def follow() -> None:
            async for event in stub.WatchResources(rpb.WatchResourcesRequest(since_revision=revision)):
                now = time.perf_counter()
                if event.event_type == rpb.WATCH_EVENT_TYPE_SYNCED and not synced.done():
                    synced.set_result(None)
                key = (event.event_type, event.resource.identifier)
                future = self.waiters.pop(key, None)
                if future is None:
                    future = self.waiters[key] = asyncio.get_running_loop().create_future()
                if not future.done():
                    future.set_result(now)

        self.watch_task = asyncio.create_task(follow())
        await asyncio.wait_for(synced, 30)

    def seen(self, event_type: int, identifier: str) -> asyncio.Future[float]:
        key = (event_type, identifier)
        future = self.waiters.get(key)
        if future is None:
            future = self.waiters[key] = asyncio.get_running_loop().create_future()
        return future

    async def watch_sample(self, identifier: str) -> tuple[float, float]:
        """(ms from RegisterModel return to the watcher seeing it, ms from the call's start)."""
        put = self.seen(rpb.WATCH_EVENT_TYPE_PUT, identifier)
        t0 = time.perf_counter()
        await self.models.RegisterModel(rpb.RegisterModelRequest(model_id=identifier), timeout=30)
        t1 = time.perf_counter()
        t2 = await asyncio.wait_for(put, 30)
        self.waiters.pop((rpb.WATCH_EVENT_TYPE_PUT, identifier), None)
        gone = self.seen(rpb.WATCH_EVENT_TYPE_DELETE, identifier)
        await self.models.UnregisterModel(rpb.UnregisterModelRequest(model_id=identifier), timeout=30)
        await asyncio.wait_for(gone, 30)
        self.waiters.pop((rpb.WATCH_EVENT_TYPE_DELETE, identifier), None)
        return (t2 - t1) * 1e3, (t2 - t0) * 1e3

    # -------------------------------------------------------------- reads
    async def list_all(self, page_size: int) -> tuple[float, int, int]:
        """(seconds, models, pages) for a full paginated ListModels."""
        t0 = time.perf_counter()
        token, count, pages = "", 0, 0
        while True:
            reply = await self.models.ListModels(rpb.ListModelsRequest(page_size=page_size, page_token=token),
                                                 timeout=120)
            count += len(reply.models)
            pages += 1
            token = reply.next_page_token
            if not token:
                return time.perf_counter() - t0, count, pages

    async def snapshot(self) -> tuple[float, float, int]:
        """A new watcher from revision 0: (seconds to the first event, seconds to SYNCED, events)."""
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        t0 = time.perf_counter()
        first = float("nan")
        call = stub.WatchResources(rpb.WatchResourcesRequest(since_revision=0), timeout=300)
        events = 0
        async for event in call:
            if not events:
                first = time.perf_counter() - t0
            events += 1
            if event.event_type == rpb.WATCH_EVENT_TYPE_SYNCED:
                break
        elapsed = time.perf_counter() - t0
        call.cancel()
        return first, elapsed, events

    def random_ids(self, n: int, rng: random.Random) -> list[str]:
        return [model_id(self.prefix, rng.randrange(self.size)) for _ in range(n)]


# ----------------------------------------------------------------------------- registration
async def while_sampling(reg: Registry, probe_id: str, work: Any) -> tuple[Any, B.Batch]:
    """Await ``work`` while GetModel(probe_id) is sampled on another connection (one call every ~5 ms)."""
    stop_sampling = asyncio.Event()

    async def sampler() -> B.Batch:
        async with grpc.aio.insecure_channel(reg.process.address) as ch:
            stub = registry_pb2_grpc.ModelsServiceStub(ch)
            request = rpb.GetModelRequest(model_id=probe_id)
            await stub.GetModel(request, timeout=60)  # connected before the work starts
            started.set()
            latencies, t_start = [], time.perf_counter()
            while not stop_sampling.is_set():
                t0 = time.perf_counter()
                await stub.GetModel(request, timeout=60)
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.005)
            return B.Batch(latencies, time.perf_counter() - t_start)

    started = asyncio.Event()
    task = asyncio.create_task(sampler())
    await started.wait()
    try:
        result = await work
    finally:
        stop_sampling.set()
    return result, await task


async def register_many(reg: Registry, start: int, stop: int, in_flight: int) -> B.Batch:
    """RegisterModel for ids [start, stop) with ``in_flight`` calls outstanding."""
    counter = iter(range(start, stop))

    async def one() -> Any:
        return await reg.models.RegisterModel(rpb.RegisterModelRequest(
            model_id=model_id(reg.prefix, next(counter)), model_type=common_pb2.MODEL_TYPE_LLM), timeout=60)

    return await B.concurrent(one, stop - start, in_flight)


def seed_store(reg: Registry, template: common_pb2.Resource, start: int, stop: int, chunk: int = 10_000) -> float:
    """Write models [start, stop) into the (stopped) registry's store, ``chunk`` per transaction."""
    from services.registry.store import SqliteRegistryStore

    store = SqliteRegistryStore(reg.db_path)
    try:
        _, revision = store.load()
        t0 = time.perf_counter()
        for lo in range(start, stop, chunk):
            batch = []
            for i in range(lo, min(lo + chunk, stop)):
                resource = common_pb2.Resource()
                resource.CopyFrom(template)
                for name in ("revision", "create_time", "update_time"):
                    resource.ClearField(name)
                resource.identifier = resource.provider_resource_id = model_id(reg.prefix, i)
                batch.append(resource)
            revision = store.apply(batch, [], revision)[-1].revision
        return time.perf_counter() - t0
    finally:
        store.close()


# ----------------------------------------------------------------------------- main
async def fill(args: argparse.Namespace, small: Registry, large: Registry) -> dict[str, Any]:
    info: dict[str, Any] = {"levels": []}
    await small.open()
    await large.open()
    try:
        await register_many(small, 0, small.size, 8)
        B.progress(f"registering {args.rpc_models:,} models in LARGE through RegisterModel ...")
        done = 0
        levels = args.levels or [64]
        for n, level in enumerate(levels):
            last = n == len(levels) - 1
            count = (args.rpc_models - done) if last else min(args.probe, max(args.rpc_models - done, 0))
            if count <= 0:
                continue
            work = register_many(large, done, done + count, level)
            if last and done:
                batch, sampled = await while_sampling(large, model_id(large.prefix, 0), work)
            else:
                batch, sampled = await work, None
            if batch.errors:
                raise RuntimeError(f"RegisterModel at {level} in flight: {batch.errors} failed; first: {batch.first_error}")
            info["levels"].append((level, batch, sampled))
            done += count
        template = (await large.models.GetModel(rpb.GetModelRequest(model_id=model_id(large.prefix, 0)))).model
        info["template"] = template
    finally:
        await small.close()
        await large.close()
    return info


async def measure(args: argparse.Namespace, small: Registry, large: Registry) -> tuple[B.Results, dict[str, Any]]:
    regs = {"small": small, "large": large}
    extra: dict[str, Any] = {"list_counts": {}, "snapshot_events": {}, "watch": {"small": [], "large": []}}
    rng = random.Random(7)
    for reg in regs.values():
        await reg.open()
        await reg.start_watch()
        # warm the connection and the code paths
        await B.sequential(lambda reg=reg: reg.models.GetModel(
            rpb.GetModelRequest(model_id=model_id(reg.prefix, 0)), timeout=10), 50)
    results = B.Results()
    per_round = max(1, math.ceil(args.watch_samples / args.rounds))
    try:
        for r in range(args.rounds):
            B.progress(f"round {r + 1}/{args.rounds}")
            for label in B.rotated(list(regs), r):
                reg = regs[label]
                # watch propagation (writes: each model is registered then unregistered)
                after, from_start = [], []
                for k in range(per_round):
                    a, s = await reg.watch_sample(f"watch-probe-{r}-{k}")
                    after.append(a / 1e3)
                    from_start.append(s / 1e3)
                results.add("watch: seen after RegisterModel returned", label, B.Batch(after, 1.0))
                results.add("watch: seen after RegisterModel started", label, B.Batch(from_start, 1.0))
                extra["watch"][label] += after
                # ListModels: first list after those writes, then again
                for name in ("ListModels all pages, first after a write", "ListModels all pages"):
                    elapsed, count, pages = await reg.list_all(args.page_size)
                    results.add(name, label, B.Batch([elapsed], elapsed))
                    extra["list_counts"][label] = (count, pages)
                # point reads on random identifiers
                ids = iter(reg.random_ids(args.calls, rng))
                get = lambda reg=reg, ids=ids: reg.models.GetModel(rpb.GetModelRequest(model_id=next(ids)), timeout=30)
                results.add("GetModel", label, await B.sequential(get, args.calls))
                ids2 = iter(reg.random_ids(args.calls, rng))
                resolve = lambda reg=reg, ids=ids2: reg.registry.ResolveResource(
                    rpb.ResolveResourceRequest(type=MODEL, identifier=next(ids)), timeout=30)
                results.add("ResolveResource", label, await B.sequential(resolve, args.calls))
                # a new watcher's snapshot
                (first, elapsed, events), sampled = await while_sampling(reg, model_id(reg.prefix, 0), reg.snapshot())
                results.add("GetModel while a new watcher takes its snapshot", label, sampled)
                results.add("new watcher snapshot: first event", label, B.Batch([first], first))
                results.add("new watcher snapshot: SYNCED", label, B.Batch([elapsed], elapsed))
                extra["snapshot_events"][label] = events
    finally:
        for reg in regs.values():
            await reg.close()
    return results, extra


def report(args: argparse.Namespace, small: Registry, large: Registry, info: dict[str, Any],
           results: B.Results, extra: dict[str, Any], seed: tuple[int, float] | None,
           rss: dict[str, float]) -> None:
    S, L = f"{small.size:,}", f"{large.size:,}"
    print()
    print(f"Registration into LARGE through ModelsService/RegisterModel ({args.rpc_models:,} models)")
    rows = []
    for level, batch, _ in info["levels"]:
        rows.append([f"{level} in flight", len(batch.latencies), batch.rps, batch.p50 * 1e3,
                     B.percentile(batch.latencies, 99) * 1e3])
    print(B.table(["RegisterModel", "models", "models/s", "p50 ms", "p99 ms"], rows))
    sampled = next((s for _, _, s in info["levels"] if s is not None), None)
    idle = results.summary("GetModel", "large")
    if sampled is not None and sampled.latencies:
        print(f"   GetModel on LARGE while RegisterModel x{info['levels'][-1][0]} runs: p50 "
              f"{B.fmt(sampled.p50 * 1e3)} ms, p99 {B.fmt(B.percentile(sampled.latencies, 99) * 1e3)} ms, "
              f"max {B.fmt(max(sampled.latencies) * 1e3)} ms ({len(sampled.latencies)} samples; idle p50 "
              f"{B.fmt(idle['p50_ms'])} ms)")
    if seed is not None:
        count, seconds = seed
        print(f"   NOTE: the other {count:,} models were written straight into LARGE's SQLite store with the registry "
              f"stopped ({count / seconds:,.0f} models/s in 10,000-model transactions), then the registry restarted "
              f"from it; at the RegisterModel rate above all {large.size:,} would take "
              f"{large.size / info['levels'][-1][1].rps:,.0f} s. Use --rpc-models all to do it anyway.")

    print()
    print(f"SMALL = {S} models, LARGE = {L} models; {args.rounds} interleaved rounds")
    rows = [["registry start to healthy (s)", small.startup_s, large.startup_s, large.startup_s / small.startup_s],
            ["registry RSS after start (MiB)", rss["small"], rss["large"], rss["large"] / rss["small"]]]

    def add(name: str, key: str) -> None:
        a, b = results.summary(name, "small"), results.summary(name, "large")
        rows.append([f"{name} {key.split('_')[0]} ms", a[key], b[key],
                     results.ratio(name, "large", "small", "p50") if key == "p50_ms"
                     else (b[key] / a[key] if a[key] else float("nan"))])

    add("GetModel", "p50_ms")
    add("GetModel", "p99_ms")
    add("ResolveResource", "p50_ms")
    add("ResolveResource", "p99_ms")
    add("ListModels all pages", "p50_ms")
    add("ListModels all pages, first after a write", "p50_ms")
    add("new watcher snapshot: first event", "p50_ms")
    add("new watcher snapshot: SYNCED", "p50_ms")
    stalls = {label: max((max(b.latencies) for b in results.get("GetModel while a new watcher takes its snapshot", label)
                          if b.latencies), default=float("nan")) * 1e3 for label in ("small", "large")}
    rows.append(["GetModel max latency during those snapshots ms", stalls["small"], stalls["large"],
                 stalls["large"] / stalls["small"]])
    add("watch: seen after RegisterModel started", "p50_ms")
    ws, wl = extra["watch"]["small"], extra["watch"]["large"]
    for label, q in ((f"median of {len(ws)}/{len(wl)}", 50), ("p90", 90)):
        a, b = B.percentile(ws, q) * 1e3, B.percentile(wl, q) * 1e3
        # a ratio of two numbers near zero (or below it) means nothing: shown only when both are clearly > 0
        rows.append([f"watch: seen after RegisterModel returned, {label} ms", a, b,
                     b / a if a > 0.05 and b > 0.05 else "-"])
    for row in rows:
        row.append(row[2] - row[1])
    print(B.table(["metric", f"small ({S})", f"large ({L})", "RATIO large/small", "large-small"], rows))
    lc, se = extra["list_counts"], extra["snapshot_events"]
    print(f"   ListModels returned {lc['small'][0]:,} models in {lc['small'][1]} page(s) / {lc['large'][0]:,} in "
          f"{lc['large'][1]} page(s); snapshots carried {se['small']:,} / {se['large']:,} events.")
    print("   p50 ratios are medians of same-round ratios; the p99 and p90 ratios divide pooled percentiles. A watch "
          "delay <= 0 means the watcher heard of the write before the writer's own reply arrived.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    B.header("registry_scale: one registry with 10 models vs one with 100,000",
             small=args.small, large=args.models, rpc_models=args.rpc_models, rounds=args.rounds,
             register_concurrency=args.register_concurrency, quick=args.quick)
    started = time.monotonic()
    rc = 0
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        small = Registry("small", pathlib.Path(tmp) / "small", args.small, "small-model")
        large = Registry("large", pathlib.Path(tmp) / "large", args.models, "bench-model")
        try:
            B.progress("starting two registry processes ...")
            small.start()
            large.start()
            info = B.run(lambda: fill(args, small, large))
            seed = None
            large.process.stop()
            small.process.stop()
            if args.rpc_models < args.models:
                B.progress(f"writing the other {args.models - args.rpc_models:,} models into LARGE's store ...")
                seconds = seed_store(large, info["template"], args.rpc_models, args.models)
                seed = (args.models - args.rpc_models, seconds)
            B.progress("restarting both registries from their stores ...")
            small.start()
            large.start()
            rss = {"small": B.rss_mib(small.process.process.pid), "large": B.rss_mib(large.process.process.pid)}
            results, extra = B.run(lambda: measure(args, small, large))
            for label, reg in (("small", small), ("large", large)):
                count = extra["list_counts"][label][0]
                if count != reg.size:
                    print(f"ERROR {label} registry lists {count:,} models, expected {reg.size:,}")
                    rc = 1
            report(args, small, large, info, results, extra, seed, rss)
            for line in results.errors():
                print(f"ERROR {line}")
                rc = 1
        except Exception as err:  # noqa: BLE001
            print(f"FAILED: {type(err).__name__}: {err}")
            for reg in (small, large):
                proc = reg.process.process
                if proc is not None and proc.poll() is not None:
                    print(f"-- {reg.label} registry exited with {proc.returncode}; log tail:\n{reg.process.log_tail()}")
            rc = 1
        finally:
            small.process.stop()
            large.process.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
