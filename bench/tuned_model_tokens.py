"""Generation speed of a tuned model served by inline::transformers: base + LoRA adapter vs the base.

Builds, in a work dir, what post_training produces: the packaged SmolLM2-135M-Instruct GGUF converted
to a float32 transformers folder (30-60 s the first time; pass --work-dir to reuse it), a LoRA adapter
over it (r=8 on q_proj/v_proj, seeded random weights: speed does not depend on training) and the
same adapter merged into a full folder. Then, interleaved in rounds, one greedy chat answer of up to
--tokens new tokens per variant, same prompt:

  base       the base folder                          (its adapters disabled: the same shared weights)
  adapter    base + LoRA adapter, not merged          (what a LoRA job serves: extra low-rank matmuls)
  merged     the merged folder                        (what a job with merged output serves)

each through the provider in this process ("in-process") and, unless --no-mesh, through a real mesh
("gateway": registry + inference with inline::transformers + gateway, the models registered with the
gateway's ModelsService). tokens/s = completion_tokens (from usage) / wall time of the call, prompt
processing included. Values are medians over rounds; ratios are medians of same-round ratios
(bench/_benchlib.py rules).

    .venv/bin/python bench/tuned_model_tokens.py                      # ~3-4 min on 2 cores
    .venv/bin/python bench/tuned_model_tokens.py --quick --no-mesh    # ~1 min
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402

from services.inference.providers.base import ModelTarget  # noqa: E402
from services.inference.providers.inline.transformers.config import TransformersConfig  # noqa: E402
from services.inference.providers.inline.transformers.provider import TransformersProvider  # noqa: E402
from stackmesh.client import StackmeshClient  # noqa: E402
from stackmesh.inference.v1 import inference_pb2_grpc  # noqa: E402
from tests.fixtures.transformers.build_models import (  # noqa: E402
    convert_packaged_gguf, make_lora_adapter, merge_adapter)
from tests.support.mesh import LocalMesh  # noqa: E402

PROMPT = "Write a long story about a robot who learns to paint."
VARIANTS = ["base", "adapter", "merged"]
PROVIDERS = {"inference": [{"provider_id": "transformers", "provider_type": "inline::transformers", "config": {}}]}
Call = Callable[[], Awaitable[int]]  # one generation -> completion tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds (3) and tokens (32)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 3)")
    p.add_argument("--tokens", type=int, help="max new tokens per answer (default 64, quick 32)")
    p.add_argument("--no-mesh", action="store_true", help="in-process only (no registry/inference/gateway processes)")
    p.add_argument("--work-dir", type=pathlib.Path, help="keep the converted models here and reuse them next time")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.tokens = args.tokens or (32 if args.quick else 64)
    return args


def build_models(work: pathlib.Path) -> dict[str, pathlib.Path]:
    started = time.monotonic()
    base = convert_packaged_gguf(work / "base")
    adapter = work / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        make_lora_adapter(base, adapter, seed=1, scale=0.05)
    merged = work / "merged"
    if not (merged / "model.safetensors").is_file():
        merge_adapter(base, adapter, merged)
    B.progress(f"models ready in {time.monotonic() - started:.1f} s under {work}")
    return {"base": base, "adapter": adapter, "merged": merged}


def request(tokens: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens, "temperature": 0.0}


def in_process_calls(provider: TransformersProvider, models: dict[str, pathlib.Path], tokens: int) -> dict[str, Call]:
    targets = {"base": ModelTarget("base", str(models["base"]), "llm"),
               "adapter": ModelTarget("adapter", str(models["adapter"]), "llm", {"base_path": str(models["base"])}),
               "merged": ModelTarget("merged", str(models["merged"]), "llm")}

    def call(target: ModelTarget) -> Call:
        async def run() -> int:
            reply = await provider.chat_completion(target, request(tokens))
            return reply["usage"]["completion_tokens"]
        return run

    return {name: call(target) for name, target in targets.items()}


def gateway_calls(channel: grpc.aio.Channel, tokens: int) -> dict[str, Call]:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    def call(model: str) -> Call:
        async def run() -> int:
            reply = await stub.ChatCompletion(StackmeshClient.chat_request(model, PROMPT, max_tokens=tokens,
                                                                           temperature=0.0), timeout=300)
            return reply.usage.completion_tokens
        return run

    return {name: call(f"bench-{name}") for name in VARIANTS}


async def measure(paths: dict[str, dict[str, Call]], rounds: int) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(path, variant) -> [(tokens, seconds)] per round; the first call of each is a warm-up, not kept."""
    runs: dict[tuple[str, str], list[tuple[int, float]]] = {}
    keys = [(path, variant) for path in paths for variant in VARIANTS]
    for path, variant in keys:
        B.progress(f"warm-up {path} / {variant} (loads weights)")
        await paths[path][variant]()
    for r in range(rounds):
        B.progress(f"round {r + 1}/{rounds}")
        for path, variant in B.rotated(keys, r):
            started = time.perf_counter()
            tokens = await paths[path][variant]()
            runs.setdefault((path, variant), []).append((tokens, time.perf_counter() - started))
    return runs


def report(args: argparse.Namespace, runs: dict[tuple[str, str], list[tuple[int, float]]]) -> None:
    def tps(key: tuple[str, str]) -> list[float]:
        return [tokens / seconds for tokens, seconds in runs[key]]

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float:
        return B.median(x / y for x, y in zip(tps(a), tps(b)))

    print(f"\nGREEDY chat answer, up to {args.tokens} new tokens, prompt {PROMPT!r} (median over {args.rounds} rounds)")
    rows = []
    for path, variant in runs:
        rows.append([f"{path} / {variant}", B.median(t for t, _ in runs[(path, variant)]),
                     B.median(s * 1e3 for _, s in runs[(path, variant)]), B.median(tps((path, variant))),
                     ratio((path, variant), (path, "base"))])
    print(B.table(["path / model", "tokens", "p50 ms/answer", "tokens/s", "tokens/s vs base"], rows))
    for path in dict.fromkeys(p for p, _ in runs):
        print(f"{path}: adapter / base tokens/s = {ratio((path, 'adapter'), (path, 'base')):.2f}   "
              f"merged / base = {ratio((path, 'merged'), (path, 'base')):.2f}   "
              f"adapter / merged = {ratio((path, 'adapter'), (path, 'merged')):.2f}")
    if ("gateway", "base") in runs:
        print("gateway / in-process tokens/s: " + "   ".join(
            f"{v} {ratio(('gateway', v), ('in-process', v)):.2f}" for v in VARIANTS))


async def bench(args: argparse.Namespace, models: dict[str, pathlib.Path], mesh: LocalMesh | None) -> int:
    provider = TransformersProvider("transformers", TransformersConfig(), {})
    await provider.initialize()
    paths = {"in-process": in_process_calls(provider, models, args.tokens)}
    channel = None
    if mesh is not None:
        with StackmeshClient(mesh.url) as client:
            client.register_model("bench-base", provider_id="transformers", provider_model_id=str(models["base"]))
            client.register_model("bench-adapter", provider_id="transformers",
                                  provider_model_id=str(models["adapter"]),
                                  metadata={"base_path": str(models["base"]), "adapter_path": str(models["adapter"])})
            client.register_model("bench-merged", provider_id="transformers", provider_model_id=str(models["merged"]))
        channel = grpc.aio.insecure_channel(mesh.url)
        paths["gateway"] = gateway_calls(channel, args.tokens)
    try:
        runs = await measure(paths, args.rounds)
    finally:
        if channel is not None:
            await channel.close()
        await provider.shutdown()
    report(args, runs)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    B.header("tuned_model_tokens: inline::transformers, base + LoRA adapter vs base vs merged",
             tokens=args.tokens, rounds=args.rounds, mesh=not args.no_mesh, quick=args.quick)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-tuned-") as tmp:
        work = args.work_dir or pathlib.Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = build_models(work)
        mesh = None
        if not args.no_mesh:
            (pathlib.Path(tmp) / "mesh").mkdir()
            mesh = LocalMesh(pathlib.Path(tmp) / "mesh", providers=PROVIDERS)
        try:
            if mesh is not None:
                B.progress("starting registry, inference (inline::transformers) and gateway processes ...")
                mesh.start()
            rc = B.run(lambda: bench(args, models, mesh))
        except Exception as err:  # noqa: BLE001 - report with the services' logs
            if mesh is None:
                raise
            B.report_mesh_failure(err, mesh)
            rc = 1
        finally:
            if mesh is not None:
                mesh.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
