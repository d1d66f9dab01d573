"""Eval throughput: rows/s of a benchmark job through the gateway, and where the time goes.

Starts a real mesh (registry, inference, datasetio inline::localfs, scoring inline::basic, eval
inline::meta-reference, gateway; processes on 127.0.0.1), registers a synthetic JSONL dataset of
--rows questions and a benchmark with basic::subset_of, and measures, interleaved in rounds:

  eval-job      RunEval through the gateway, followed with WatchJob to COMPLETED (what a user runs);
                the job's own per-phase clock (kept in the eval store) splits it into datasetio,
                generation, scoring, store writes and the rest
  phases-bare   the same work called directly on each service, no eval in between: IterRows pages,
                ChatCompletion per row with the same concurrency, one Score call

The candidate is fast on purpose (SmolLM2-135M, --max-tokens 2, temperature 0), so that what eval
itself adds is visible next to generation. --remote serves SmolLM2 from a real `llama_cpp.server`
(remote::llama-cpp-server) instead of the inline llama-cpp provider.

    .venv/bin/python bench/eval_throughput.py            # ~2-3 min
    .venv/bin/python bench/eval_throughput.py --quick    # ~40 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pathlib
import sqlite3
import sys
import tempfile
import time

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from services.common.protoutil import struct  # noqa: E402
from stackmesh.datasetio.v1 import datasetio_pb2 as dpb, datasetio_pb2_grpc  # noqa: E402
from stackmesh.eval.v1 import eval_pb2 as epb, eval_pb2_grpc  # noqa: E402
from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc  # noqa: E402
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc  # noqa: E402
from stackmesh.scoring.v1 import scoring_pb2 as spb, scoring_pb2_grpc  # noqa: E402
from tests.support.mesh import LocalMesh  # noqa: E402

FUNCTION = "basic::subset_of"
CITIES = ["Paris", "Tokyo", "Rome", "Berlin", "Madrid", "London", "Oslo", "Cairo", "Lima", "Ottawa", "Seoul", "Delhi"]
COUNTRIES = ["France", "Japan", "Italy", "Germany", "Spain", "England", "Norway", "Egypt", "Peru", "Canada",
             "South Korea", "India"]
PHASES = ["datasetio", "generation", "scoring", "store writes", "rest (scheduling, progress, watch, hops)"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~40 s smoke run (fewer rows and rounds)")
    p.add_argument("--rows", type=int, help="dataset rows (default 200, quick 40)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    p.add_argument("--max-tokens", type=int, default=2, help="tokens generated per row")
    p.add_argument("--concurrency", type=int, default=4, help="generation_concurrency of eval, and of the bare run")
    p.add_argument("--remote", action="store_true", help="SmolLM2 from a real llama_cpp.server, not inline")
    args = p.parse_args(argv)
    for name, (quick, full) in dict(rows=(40, 200), rounds=(1, 3)).items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def write_dataset(path: pathlib.Path, rows: int) -> list[dict[str, str]]:
    data = [{"input_query": f"What is the capital of {COUNTRIES[i % len(COUNTRIES)]}? (question {i})",
             "expected_answer": CITIES[i % len(CITIES)]} for i in range(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return data


def job_timings(store: pathlib.Path, job_id: str) -> dict[str, float]:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        (text,) = conn.execute("SELECT timings FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return json.loads(text)


async def wait_discovered(gw: grpc.aio.Channel, model: str) -> None:
    models = registry_pb2_grpc.ModelsServiceStub(gw)
    functions = registry_pb2_grpc.ScoringFunctionsServiceStub(gw)
    deadline = time.monotonic() + 120
    while True:  # discovery of the models and scoring functions is asynchronous
        try:
            await models.GetModel(rpb.GetModelRequest(model_id=model), timeout=5)
            await functions.GetScoringFunction(rpb.GetScoringFunctionRequest(scoring_fn_id=FUNCTION), timeout=5)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class Runner:
    def __init__(self, args: argparse.Namespace, mesh: LocalMesh, model: str, store: pathlib.Path) -> None:
        self.args, self.mesh, self.model, self.store = args, mesh, model, store
        gw = grpc.aio.insecure_channel(mesh.url)
        self.channels = [gw] + [grpc.aio.insecure_channel(a) for a in (
            mesh.services["datasetio"].address, mesh.inference[0].address, mesh.services["scoring"].address)]
        self.gw = gw
        self.evals = eval_pb2_grpc.EvalServiceStub(gw)
        self.datasetio = datasetio_pb2_grpc.DatasetIOServiceStub(self.channels[1])
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channels[2])
        self.scoring = scoring_pb2_grpc.ScoringServiceStub(self.channels[3])
        self.sampling = ipb.SamplingParams(temperature=0.0, max_tokens=args.max_tokens)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def eval_job(self) -> dict[str, float]:
        """One RunEval to COMPLETED; client wall and the job's phase clock."""
        config = epb.BenchmarkConfig(eval_candidate=epb.ModelCandidate(model=self.model, sampling=self.sampling))
        t0 = time.perf_counter()
        job = (await self.evals.RunEval(epb.RunEvalRequest(benchmark_id="bench", benchmark_config=config),
                                        timeout=30)).job
        async for step in self.evals.WatchJob(epb.WatchJobRequest(job_id=job.job_id), timeout=3600):
            last = step.job
        wall = time.perf_counter() - t0
        if last.state != epb.JOB_STATE_COMPLETED:
            raise RuntimeError(f"eval job ended {epb.JobState.Name(last.state)}: {last.error}")
        return {"wall": wall, **job_timings(self.store, job.job_id)}

    async def bare(self) -> dict[str, float]:
        """The same work, each service called directly, phase after phase."""
        t0 = time.perf_counter()
        rows, index = [], 0
        while True:
            page = await self.datasetio.IterRows(dpb.IterRowsRequest(dataset_id="rows", start_index=index,
                                                                     limit=1000), timeout=60)
            rows += [json_format.MessageToDict(r) for r in page.rows]
            index = page.next_index
            if not page.has_more:
                break
        t1 = time.perf_counter()
        answers: list[str] = [""] * len(rows)
        gate = asyncio.Semaphore(self.args.concurrency)

        async def generate(i: int) -> None:
            async with gate:
                reply = await self.inference.ChatCompletion(ipb.ChatCompletionRequest(
                    model=self.model, messages=[ipb.ChatMessage(role="user", content=rows[i]["input_query"])],
                    sampling=self.sampling), timeout=300)
                answers[i] = reply.choices[0].message.content

        await asyncio.gather(*(generate(i) for i in range(len(rows))))
        t2 = time.perf_counter()
        scored = [struct({**r, "generated_answer": a}) for r, a in zip(rows, answers)]
        await self.scoring.Score(spb.ScoreRequest(input_rows=scored, scoring_functions=[FUNCTION]), timeout=300)
        t3 = time.perf_counter()
        return {"wall": t3 - t0, "datasetio": t1 - t0, "generation": t2 - t1, "scoring": t3 - t2}


def split(job: dict[str, float]) -> dict[str, float]:
    """A job's wall time by phase. Page reads after the first overlap generation, and row writes
    happen inside it: generation counts its wall time minus the row writes, so phases add up."""
    generation = max(job["generation_wall_s"] - job["store_s"], 0.0)
    known = job["datasetio_s"] + generation + job["scoring_s"] + job["store_s"]
    return {"datasetio": job["datasetio_s"], "generation": generation, "scoring": job["scoring_s"],
            "store writes": job["store_s"], PHASES[-1]: max(job["wall"] - known, 0.0)}


async def bench(args: argparse.Namespace, mesh: LocalMesh, model: str, store: pathlib.Path,
                dataset: pathlib.Path) -> int:
    runner = Runner(args, mesh, model, store)
    try:
        await wait_discovered(runner.gw, model)
        await registry_pb2_grpc.DatasetsServiceStub(runner.gw).RegisterDataset(rpb.RegisterDatasetRequest(
            dataset_id="rows", purpose="eval/question-answer", uri=f"file://{dataset}"), timeout=30)
        await registry_pb2_grpc.BenchmarksServiceStub(runner.gw).RegisterBenchmark(rpb.RegisterBenchmarkRequest(
            benchmark_id="bench", dataset_id="rows", scoring_functions=[FUNCTION]), timeout=30)
        B.progress("warm-up: one bare pass and one eval job")
        await runner.bare()
        await runner.eval_job()
        jobs, bares = [], []
        for r in range(args.rounds):
            B.progress(f"round {r + 1}/{args.rounds}")
            for variant in B.rotated(["eval-job", "phases-bare"], r):
                if variant == "eval-job":
                    jobs.append(await runner.eval_job())
                else:
                    bares.append(await runner.bare())
    finally:
        await runner.close()

    n = args.rows
    med = B.median
    eval_rps = med(n / j["wall"] for j in jobs)
    bare_rps = med(n / b["wall"] for b in bares)
    print()
    print(B.table(["variant", "rows", "wall s (median)", "rows/s"],
                  [["eval-job (gateway)", n, med(j["wall"] for j in jobs), eval_rps],
                   ["phases-bare (direct)", n, med(b["wall"] for b in bares), bare_rps]]))
    rows = []
    for phase in PHASES:
        inside = med(split(j)[phase] for j in jobs)
        share = med(split(j)[phase] / j["wall"] for j in jobs)
        bare = med(b[phase] for b in bares) if phase in ("datasetio", "generation", "scoring") else float("nan")
        ratio = med(split(j)[phase] / b[phase] for j, b in zip(jobs, bares)) if bare == bare else float("nan")
        rows.append([phase, inside * 1e3, f"{share * 100:.1f}%", bare * 1e3, ratio])
    print()
    print("WHERE THE TIME GOES (per eval job; medians over rounds)")
    print(B.table(["phase", "in eval job ms", "share of job wall", "called directly ms", "eval / direct"], rows))
    per_row = med(j["generation_s"] / max(j["rows_generated"], 1) for j in jobs) * 1e3
    print()
    print("RATIOS (median over rounds of same-round ratios)")
    print(B.table(["ratio", "value", "meaning"], [
        ["eval rows/s / bare rows/s", med((n / j["wall"]) / (n / b["wall"]) for j, b in zip(jobs, bares)),
         "what running it as a job through the gateway costs vs the same calls by hand"],
        ["generation share of job", med(split(j)["generation"] / j["wall"] for j in jobs),
         "1.0 = eval adds nothing but the model's time"],
        ["mean ChatCompletion latency ms", per_row, f"per row inside the job ({args.concurrency} in flight)"],
    ]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    B.header("eval_throughput: benchmark rows/s and where the time goes", rows=args.rows, rounds=args.rounds,
             max_tokens=args.max_tokens, concurrency=args.concurrency, remote=args.remote, quick=args.quick)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp, contextlib.ExitStack() as stack:
        directory = pathlib.Path(tmp)
        dataset = directory / "questions.jsonl"
        write_dataset(dataset, args.rows)
        if args.remote:
            from tests.support.llama_server import LlamaServer

            server = stack.enter_context(LlamaServer(alias="smollm2"))
            inference = [{"provider_id": "llama-server", "provider_type": "remote::llama-cpp-server",
                          "config": {"base_url": server.base_url}}]
            model = "llama-server/smollm2"
        else:
            inference = [{"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp", "config": {}}]
            model = "llama-cpp/SmolLM2-135M-Instruct"
        providers = {
            "inference": inference,
            "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}}],
            "eval": [{"provider_id": "meta-reference", "provider_type": "inline::meta-reference",
                      "config": {"data_dir": str(directory / "eval"), "generation_concurrency": args.concurrency}}],
        }
        mesh = LocalMesh(directory, providers=providers)
        try:
            B.progress("starting registry, inference, datasetio, scoring, eval and gateway processes ...")
            mesh.start()
            rc = B.run(lambda: bench(args, mesh, model, directory / "eval" / "eval_jobs.db", dataset))
        except Exception as err:  # noqa: BLE001 - report with the services' logs
            B.report_mesh_failure(err, mesh)
            rc = 1
        finally:
            mesh.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
