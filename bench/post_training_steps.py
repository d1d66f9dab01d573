"""Post-training step cost: seconds per optimizer step and the worker's peak memory (RSS) for a LoRA
fine-tune of SmolLM2-135M-Instruct at several sequence lengths, batch 4.

Each measurement runs the very worker process the post_training service starts for a job
(``python -m services.post_training.providers.inline.huggingface.worker``), on synthetic
conversations long enough that every row fills ``max_seq_len`` (so a batch is exactly 4 x seq
tokens), LoRA r=8 alpha 16 on q_proj/v_proj, AdamW lr 1e-3. The first step is a warm-up and is left
out of the step time. The peak RSS is the worker's own ``ru_maxrss`` at its last step; it is set
beside the estimate the provider checks requests against (``max_memory_gb``). The base GGUF is
converted to transformers files once (30-60 s), as the service does, and reused for every run.

Variants are interleaved in rounds (the order rotates each round); a value is the median over rounds.

    .venv/bin/python bench/post_training_steps.py                 # ~3 min
    .venv/bin/python bench/post_training_steps.py --quick         # ~1.5 min: 3 steps at 64 and 128
    .venv/bin/python bench/post_training_steps.py --data-dir ~/.cache/stackmesh-bench   # keep the base
    .venv/bin/python bench/post_training_steps.py --compare-omp --load 1   # spinning vs passive, shared host
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

from services.inference.providers.inline.llama_cpp.provider import packaged_smollm2_path  # noqa: E402
from services.post_training.providers.base import BaseSource, TrainingSpec  # noqa: E402
from services.post_training.providers.inline.huggingface.bases import ensure_base  # noqa: E402
from services.post_training.providers.inline.huggingface.limits import estimate_memory  # noqa: E402
from services.post_training.providers.inline.huggingface.runner import WORKER_MODULE, worker_env  # noqa: E402
from services.post_training.providers.inline.huggingface.shapes import gguf_shape  # noqa: E402

SENTENCE = ("Project Xylo keeps its build logs in the north archive, and every report names the codename "
            "Bluefin next to the date, the owner and the reviewer of the change. ")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: --steps 3 --seq 64 128 (unless given)")
    p.add_argument("--seq", type=int, nargs="+", help="max_seq_len values (default 64 128 256)")
    p.add_argument("--batch", type=int, default=4, help="batch_size")
    p.add_argument("--steps", type=int, help="optimizer steps per run, the first a warm-up (default 6)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the worker (0: torch's default)")
    p.add_argument("--compare-omp", action="store_true", help="also run with OMP_WAIT_POLICY=ACTIVE (torch's "
                   "default; the service sets PASSIVE) and print the ratio")
    p.add_argument("--load", type=int, default=0, help="busy-looping competitor processes to run meanwhile (a host "
                   "shared with the mesh's other services)")
    p.add_argument("--data-dir", default="", help="folder for the converted base (default: a temp dir)")
    args = p.parse_args(argv)
    args.seq = args.seq or ([64, 128] if args.quick else [64, 128, 256])
    args.steps = args.steps or (3 if args.quick else 6)
    return args


def make_job(root: pathlib.Path, name: str, base: BaseSource, seq: int, args: argparse.Namespace) -> pathlib.Path:
    folder = root / "jobs" / name
    folder.mkdir(parents=True)
    spec = TrainingSpec(model="SmolLM2-135M-Instruct", base=base, dataset_id="synthetic", algorithm="lora",
                        batch_size=args.batch, max_seq_len=seq, lr=1e-3, shuffle=False,
                        max_steps_per_epoch=args.steps)
    (folder / "job.json").write_text(json.dumps({
        "job_id": name, "spec": spec.to_json(), "data_dir": str(root), "provider_id": "bench",
        "save_total_limit": 1, "logging_steps": 1, "torch_threads": args.threads or None}))
    rows = [{"messages": [{"role": "user", "content": f"Tell me about project Xylo ({i})."},
                          {"role": "assistant", "content": SENTENCE * 8}]} for i in range(args.batch * args.steps)]
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def run_worker(folder: pathlib.Path, omp_wait: str) -> dict[str, float]:
    env = {**worker_env(), "OMP_WAIT_POLICY": omp_wait}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", WORKER_MODULE, str(folder)], capture_output=True, env=env,
                          cwd=B.ROOT, check=False)
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    errors = [e["message"] for e in events if e["event"] == "error"]
    steps = [e for e in events if e["event"] == "step"]
    if errors or done.returncode != 0 or not steps:
        raise RuntimeError(f"worker failed ({done.returncode}): {errors or done.stderr.decode()[-2000:]}")
    timed = [e["seconds"] for e in steps[1:]] or [steps[0]["seconds"]]
    return {"step_s": statistics.median(timed), "rss_mb": steps[-1]["peak_rss_mb"], "wall_s": wall,
            "first_s": steps[0]["seconds"], "loss": steps[-1]["loss"]}


@contextlib.contextmanager
def competing_load(n: int) -> Iterator[None]:
    """``n`` single-threaded busy loops, stopped (by pid) afterwards."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gguf = packaged_smollm2_path()
    stat = gguf.stat()
    base = BaseSource("SmolLM2-135M-Instruct", "llama-cpp", "gguf", str(gguf.resolve()), stat.st_size, stat.st_mtime)
    policies = ["PASSIVE", "ACTIVE"] if args.compare_omp else ["PASSIVE"]
    variants = [(seq, policy) for seq in args.seq for policy in policies]
    B.header("post-training step cost: SmolLM2-135M LoRA (r=8, q_proj+v_proj), one worker process per run",
             batch=args.batch, steps=args.steps, rounds=args.rounds, threads=args.threads or "torch default",
             competing_busy_loops=args.load)
    with tempfile.TemporaryDirectory(prefix="pt-bench-") as tmp:
        root = pathlib.Path(args.data_dir).expanduser() if args.data_dir else pathlib.Path(tmp)
        runs = pathlib.Path(tmp) / "runs"
        B.progress("converting the GGUF base to transformers files (once)")
        t0 = time.perf_counter()
        folder, converted = ensure_base(root, base)
        B.progress(f"base {'converted' if converted else 'reused'} in {time.perf_counter() - t0:.1f} s: {folder}")
        results: dict[tuple[int, str], list[dict[str, float]]] = {v: [] for v in variants}
        with competing_load(args.load):
            for r in range(args.rounds):
                for seq, policy in B.rotated(variants, r):
                    B.progress(f"round {r + 1}: seq {seq}, OMP_WAIT_POLICY={policy}")
                    job = make_job(runs / f"r{r}", f"seq{seq}-{policy}", base, seq, args)
                    results[(seq, policy)].append(run_worker(job, policy))
        shape = gguf_shape(gguf)
        rows = []
        for seq, policy in variants:
            got = results[(seq, policy)]
            measured = {k: B.median(x[k] for x in got) for k in got[0]}
            spec = TrainingSpec(model="m", base=base, dataset_id="d", algorithm="lora", batch_size=args.batch,
                                max_seq_len=seq)
            estimate = estimate_memory(shape, spec).total / 2 ** 20
            name = f"seq {seq}" + (f" {policy.lower()}" if args.compare_omp else "")
            rows.append([name, measured["step_s"], args.batch * seq / measured["step_s"], measured["first_s"],
                         measured["rss_mb"], estimate, estimate / measured["rss_mb"], measured["wall_s"]])
        print(B.table(["variant", "s/step", "tokens/s", "first step s", "peak RSS MiB", "estimate MiB",
                       "estimate/RSS", "worker wall s"], rows))
        if args.compare_omp:
            for seq in args.seq:
                pairs = zip(results[(seq, "ACTIVE")], results[(seq, "PASSIVE")])
                ratios = [a["step_s"] / p["step_s"] for a, p in pairs]
                print(f"   seq {seq}: s/step active / passive = {B.fmt(B.median(ratios))} (median over rounds)")
        print("   s/step: median over steps 2..N (optimizer steps of batch x seq tokens, forward+backward+AdamW);"
              " peak RSS: the worker's ru_maxrss;\n   estimate: what the provider checks against max_memory_gb "
              "(limits.estimate_memory); worker wall: process start to exit (imports, load, steps, save).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
