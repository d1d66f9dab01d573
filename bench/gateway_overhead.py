"""What the gateway hop costs: the same call through the gateway vs straight to the backend service.

Starts a real mesh (registry + inference + gateway processes on 127.0.0.1, tests/support/mesh.py)
and measures, interleaved in rounds:

  Embeddings   (inline::sentence-transformers, all-MiniLM-L6-v2, one short input)
               gateway -> inference   vs   inference directly
  GetModel     (ModelsService, a cheap registry read)
               gateway -> registry    vs   registry directly
  ChatCompletion max_tokens=1 on SmolLM2-135M-Instruct (only with --chat; inline::llama-cpp)

each sequentially (one call at a time) and with 50 calls in flight. Prints p50, p99 and
requests/s per path, and the ratios gateway/direct measured within the same rounds.

    .venv/bin/python bench/gateway_overhead.py            # ~1-2 min
    .venv/bin/python bench/gateway_overhead.py --quick    # ~20 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile
import time
from typing import Any

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402

from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc  # noqa: E402
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc  # noqa: E402
from tests.support.mesh import LocalMesh  # noqa: E402

EMBED_MODEL = "all-MiniLM-L6-v2"
EMBED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the identifier discovery registers
CHAT_MODEL = "SmolLM2-135M-Instruct"
ST_PROVIDER = {"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers", "config": {}}
LLAMA_PROVIDER = {"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp", "config": {}}
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~20 s smoke run (fewer rounds and calls)")
    p.add_argument("--chat", action="store_true", help="also measure ChatCompletion (max_tokens=1) on SmolLM2")
    p.add_argument("--chat-fresh-prompt", action="store_true",
                   help="a different prompt on every chat call (default: the same prompt, which llama.cpp answers "
                        "from its prefix KV cache, i.e. ~1 token of decode and no prompt processing)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 7, quick 2)")
    p.add_argument("--concurrency", type=int, default=50, help="calls in flight in the concurrent mode")
    p.add_argument("--embed-seq", type=int, help="sequential Embeddings calls per path per round (default 25)")
    p.add_argument("--embed-conc", type=int, help="concurrent Embeddings calls per path per round (default 150)")
    p.add_argument("--get-seq", type=int, help="sequential GetModel calls per path per round (default 300)")
    p.add_argument("--get-conc", type=int, help="concurrent GetModel calls per path per round (default 2000)")
    p.add_argument("--chat-seq", type=int, help="sequential chat calls per path per round (default 8)")
    p.add_argument("--chat-conc", type=int, help="concurrent chat calls per path per round (default 50)")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(rounds=(2, 7), embed_seq=(8, 25), embed_conc=(50, 150), get_seq=(100, 300),
                    get_conc=(500, 2000), chat_seq=(3, 8), chat_conc=(50, 50))
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)
    return args


async def wait_until(call: B.Call, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            await call()
            return
        except grpc.aio.AioRpcError as err:
            last = f"{err.code().name}: {err.details()}"
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{what} did not succeed within {timeout:.0f} s; last error: {last}")


async def bench(args: argparse.Namespace, mesh: LocalMesh) -> int:
    gw = grpc.aio.insecure_channel(mesh.url, options=CHANNEL_OPTIONS)
    inf = grpc.aio.insecure_channel(mesh.inference[0].address, options=CHANNEL_OPTIONS)
    reg = grpc.aio.insecure_channel(mesh.registry.address, options=CHANNEL_OPTIONS)
    try:
        embed_req = ipb.EmbeddingsRequest(model=EMBED_MODEL, input=["The quick brown fox jumps over the lazy dog."])
        get_req = rpb.GetModelRequest(model_id=EMBED_MODEL_ID)
        chat_req = ipb.ChatCompletionRequest(model=CHAT_MODEL, messages=[ipb.ChatMessage(role="user", content="Hi")],
                                             sampling=ipb.SamplingParams(max_tokens=1, temperature=0.0))

        def embed(channel: grpc.aio.Channel) -> B.Call:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            return lambda: stub.Embeddings(embed_req, timeout=120)

        def get_model(channel: grpc.aio.Channel) -> B.Call:
            stub = registry_pb2_grpc.ModelsServiceStub(channel)
            return lambda: stub.GetModel(get_req, timeout=30)

        counter = iter(range(1 << 62))

        def chat(channel: grpc.aio.Channel) -> B.Call:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            if not args.chat_fresh_prompt:
                return lambda: stub.ChatCompletion(chat_req, timeout=120)

            def fresh() -> Any:
                request = ipb.ChatCompletionRequest()
                request.CopyFrom(chat_req)
                request.messages[0].content = f"Hi, this is message {next(counter)}."
                return stub.ChatCompletion(request, timeout=120)

            return fresh

        # workload -> (calls per path: {"gateway": ..., "direct": ...}, sequential n, concurrent total)
        workloads: dict[str, tuple[dict[str, B.Call], int, int]] = {
            "Embeddings": ({"gateway": embed(gw), "direct": embed(inf)}, args.embed_seq, args.embed_conc),
            "GetModel": ({"gateway": get_model(gw), "direct": get_model(reg)}, args.get_seq, args.get_conc),
        }
        if args.chat:
            workloads["ChatCompletion"] = ({"gateway": chat(gw), "direct": chat(inf)}, args.chat_seq, args.chat_conc)

        B.progress("waiting for discovery and caches; loading models (first Embeddings call) ...")
        await wait_until(get_model(reg), f"GetModel {EMBED_MODEL_ID} on the registry", 90)
        for name, (calls, _, _) in workloads.items():
            for path, call in calls.items():
                await wait_until(call, f"{name} via {path}", 180)
                warm = await B.concurrent(call, min(2 * args.concurrency, 100) if name == "GetModel" else 10,
                                          args.concurrency)
                if warm.errors:
                    raise RuntimeError(f"warm-up {name} via {path}: {warm.first_error}")

        results = B.Results()
        modes = [("seq", None), (f"c{args.concurrency}", args.concurrency)]
        for r in range(args.rounds):
            B.progress(f"round {r + 1}/{args.rounds}")
            for name, (calls, n_seq, n_conc) in workloads.items():
                for mode, in_flight in modes:
                    for path in B.rotated(list(calls), r):
                        if in_flight is None:
                            batch = await B.sequential(calls[path], n_seq)
                        else:
                            batch = await B.concurrent(calls[path], n_conc, in_flight)
                        results.add(f"{name} {mode}", path, batch)

        rows, ratio_rows = [], []
        for name in workloads:
            for mode, _ in modes:
                key = f"{name} {mode}"
                for path in ("direct", "gateway"):
                    s = results.summary(key, path)
                    rows.append([key, path, int(s["calls"]), s["p50_ms"], s["p99_ms"], s["rps"]])
                ratio_rows.append([key, results.ratio(key, "gateway", "direct", "p50"),
                                   results.ratio(key, "gateway", "direct", "rps"),
                                   results.diff_ms(key, "gateway", "direct")])
        print()
        print(B.table(["workload", "path", "calls", "p50 ms", "p99 ms", "req/s"], rows))
        print()
        print("RATIOS gateway/direct (median over rounds of same-round ratios; 1.00 = the hop is free)")
        print(B.table(["workload", "p50 gw/direct", "req/s gw/direct", "added p50 ms"], ratio_rows))
        if args.chat and not args.chat_fresh_prompt:
            print("   ChatCompletion repeats one prompt: llama.cpp reuses its KV cache for it, so the backend does ~1 token"
                  " of decode; --chat-fresh-prompt makes every prompt new (adds prompt processing).")
        errors = results.errors()
        for line in errors:
            print(f"ERROR {line}")
        return 1 if errors else 0
    finally:
        for channel in (gw, inf, reg):
            await channel.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    providers = {"inference": [ST_PROVIDER, *([LLAMA_PROVIDER] if args.chat else [])]}
    B.header("gateway_overhead: the same call through the gateway vs straight to the service",
             rounds=args.rounds, concurrency=args.concurrency, chat=args.chat, quick=args.quick)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        mesh = LocalMesh(pathlib.Path(tmp), providers=providers)
        try:
            B.progress("starting registry, inference and gateway processes ...")
            mesh.start()
            rc = B.run(lambda: bench(args, mesh))
        except Exception as err:  # noqa: BLE001 - report with the services' logs
            B.report_mesh_failure(err, mesh)
            rc = 1
        finally:
            mesh.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
