"""Run every benchmark in bench/ in sequence; exit non-zero when any of them fails.

    .venv/bin/python bench/run_all.py            # ~30 min
    .venv/bin/python bench/run_all.py --quick    # ~10 min smoke run
    .venv/bin/python bench/run_all.py --chat     # gateway_overhead also measures ChatCompletion
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = ["gateway_overhead.py", "echo_ceiling.py", "registry_scale.py", "replica_scaling.py",
              "vector_io_throughput.py", "rag_latency.py", "datasetio_rows.py", "eval_throughput.py",
              "post_training_steps.py", "tuned_model_tokens.py"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--chat", action="store_true", help="pass --chat to gateway_overhead.py")
    p.add_argument("--timeout", type=float, default=900, help="seconds one benchmark may run (default 900)")
    args = p.parse_args(argv)
    outcomes = []
    for name in BENCHMARKS:
        cmd = [sys.executable, str(HERE / name)]
        if args.quick:
            cmd.append("--quick")
        if args.chat and name == "gateway_overhead.py":
            cmd.append("--chat")
        print(f"\n##### {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(cmd, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"##### {name} did not finish within {args.timeout:.0f} s", flush=True)
            rc = 124
        outcomes.append((name, rc, time.monotonic() - t0))
    print("\n##### summary")
    for name, rc, seconds in outcomes:
        print(f"   {name:<22} {'ok' if rc == 0 else f'FAILED (exit {rc})':<16} {seconds:5.0f} s")
    return 0 if all(rc == 0 for _, rc, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
