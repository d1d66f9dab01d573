"""CLI commands for guarding and measuring models: shields and ``safety check``, datasets and their
rows, scoring functions and ``scoring``, benchmarks and ``eval`` jobs (with a progress bar)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

__all__ = ["add_commands"]

_LEVELS = {0: "none", 1: "info", 2: "warn", 3: "error"}


def _client(args: argparse.Namespace):
    from stackmesh.client import StackmeshClient

    return StackmeshClient(args.url)


def _json_arg(value: str | None, flag: str) -> Any:
    try:
        return json.loads(value) if value else {}
    except json.JSONDecodeError as err:
        sys.exit(f"{flag} is not valid JSON: {err}")


def _print_json(sm: Any, message: Any) -> None:
    print(json.dumps(sm.to_dict(message), indent=2))


def _read_rows(path: str) -> list[dict[str, Any]]:
    """Rows of a local .jsonl file or a .json list."""
    file = pathlib.Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as err:
        sys.exit(f"{path}: {err.strerror}")
    try:
        if file.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        sys.exit(f"{path}: not JSON lines: {err}")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        sys.exit(f"{path}: expected JSON objects, one per line")
    return rows


def _source_uri(source: str) -> str:
    """file://./qa.jsonl or ./qa.jsonl -> file:///abs/qa.jsonl: the datasetio service may run elsewhere
    (another working directory), so relative paths are made absolute here."""
    path = source[len("file://"):] if source.startswith("file://") else source
    if "://" in path:
        return source  # another scheme: the registry says what it supports
    absolute = pathlib.Path(path).expanduser().resolve()
    if not absolute.is_file():
        sys.exit(f"--source {source}: no such file ({absolute})")
    return absolute.as_uri()


# ---------------------------------------------------------------------------- registration
def cmd_shields_register(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        _print_json(sm, sm.register_shield(args.shield_id, provider_id=args.provider or "",
                                           provider_shield_id=args.provider_shield_id or "",
                                           params=_json_arg(args.params, "--params")))


def cmd_datasets_register(args: argparse.Namespace) -> None:
    rows = _read_rows(args.rows_file) if args.rows_file else None
    if bool(rows) == bool(args.source):
        sys.exit("give exactly one of --source (a file:// CSV, JSONL or Parquet file) or --rows-file")
    with _client(args) as sm:
        _print_json(sm, sm.register_dataset(args.dataset_id, args.purpose, uri=_source_uri(args.source) if args.source
                                            else "", rows=rows, provider_id=args.provider or "",
                                            metadata=_json_arg(args.metadata, "--metadata")))


def cmd_datasets_rows(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        page = sm.iter_rows(args.dataset_id, args.start, args.limit)
        for row in page.rows:
            print(json.dumps(sm.to_dict(row)))
    more = f"; next: --start {page.next_index}" if page.has_more else ""
    print(f"rows {args.start}..{page.next_index - 1} of {page.total_rows}{more}", file=sys.stderr)


def cmd_datasets_append(args: argparse.Namespace) -> None:
    rows = _read_rows(args.rows_file)
    with _client(args) as sm:
        reply = sm.append_rows(args.dataset_id, rows)
    print(f"appended {reply.appended} rows to {args.dataset_id}; it has {reply.total_rows}")


def cmd_scoring_functions_register(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        _print_json(sm, sm.register_scoring_function(
            args.scoring_fn_id, provider_id=args.provider or "", provider_scoring_fn_id=args.provider_scoring_fn_id or "",
            description=args.description or "", return_type=args.return_type or "",
            params=_json_arg(args.params, "--params")))


def cmd_benchmarks_register(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        _print_json(sm, sm.register_benchmark(args.benchmark_id, args.dataset, args.scoring_functions,
                                              provider_id=args.provider or ""))


# ---------------------------------------------------------------------------- safety and scoring
def cmd_safety_check(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        reply = sm.run_shield(args.shield_id, [{"role": args.role, "content": args.text}])
    if args.json:
        _print_json(sm, reply)
        return
    if not reply.HasField("violation"):
        print("safe")
        return
    v = reply.violation
    print(f"violation: level {_LEVELS.get(v.violation_level, '?')}, categories {', '.join(v.categories) or '-'}")
    print(f"message: {v.user_message}")


def cmd_safety_moderate(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        _print_json(sm, sm.moderate(args.text, args.shield or ""))


def cmd_scoring_score(args: argparse.Namespace) -> None:
    params = _json_arg(args.params, "--params")
    with _client(args) as sm:
        if args.dataset:
            reply = sm.score_batch(args.dataset, args.functions, params)
        else:
            reply = sm.score(_read_rows(args.rows_file), args.functions, params)
        if args.json:
            _print_json(sm, reply)
            return
        for name, result in reply.results.items():
            print(f"{name}: {json.dumps(sm.to_dict(result.aggregated_results))}")


# ---------------------------------------------------------------------------- eval
def _job_line(job: Any) -> str:
    from stackmesh.client_evaluation import JOB_STATES

    line = f"job {job.job_id} {JOB_STATES.get(job.state, '?')} {job.rows_done}/{job.rows_total} rows"
    return line + (f": {job.error}" if job.error else "")


def _follow(sm: Any, job_id: str) -> Any:
    from stackmesh.cli_progress import follow
    from stackmesh.client_evaluation import JOB_STATES

    return follow(sm.watch_job(job_id), lambda job: (job.rows_done, job.rows_total),
                  lambda job: f"rows {JOB_STATES.get(job.state, '?')}")


def _print_scores(sm: Any, scores: Any) -> None:
    for name, result in scores.items():
        print(f"{name}: {json.dumps(sm.to_dict(result.aggregated_results))}")


def cmd_eval_run(args: argparse.Namespace) -> None:
    from stackmesh.eval.v1 import eval_pb2

    with _client(args) as sm:
        config = sm.benchmark_config(args.model, max_tokens=args.max_tokens, temperature=args.temperature,
                                     system=args.system, num_examples=args.num_examples or 0)
        job = sm.run_eval(args.benchmark_id, config)
        print(job.job_id, flush=True)
        if args.detach:
            return
        job = _follow(sm, job.job_id)
        print(_job_line(job))
        if job.state == eval_pb2.JOB_STATE_COMPLETED:
            _print_scores(sm, sm.job_result(job.job_id).scores)
        else:
            sys.exit(1)


def cmd_eval_status(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        job = _follow(sm, args.job_id) if args.follow else sm.job_status(args.job_id)
    print(_job_line(job))


def cmd_eval_result(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        reply = sm.job_result(args.job_id)
        if args.json:
            _print_json(sm, reply)
            return
        for i, generation in enumerate(reply.generations):
            print(f"{i}: {json.dumps(sm.to_dict(generation))}")
        _print_scores(sm, reply.scores)


def cmd_eval_cancel(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        print(_job_line(sm.cancel_job(args.job_id)))


def cmd_eval_jobs(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        for job in sm.list_jobs(args.benchmark or ""):
            print(f"{_job_line(job)}  benchmark {job.benchmark_id}  model {job.model}")


def add_commands(sub: Any, collections: dict[str, Any]) -> None:
    """Add the register commands to the resource groups and the safety/scoring/eval groups."""
    q = collections["shields"].add_parser("register")
    q.add_argument("shield_id")
    q.add_argument("--provider", help="safety provider_id, e.g. llama-guard or code-scanner")
    q.add_argument("--provider-shield-id", help="for llama-guard: the model that classifies")
    q.add_argument("--params", help="JSON")
    q.set_defaults(func=cmd_shields_register)

    datasets = collections["datasets"]
    q = datasets.add_parser("register")
    q.add_argument("dataset_id")
    q.add_argument("--purpose", required=True,
                   choices=["eval/question-answer", "eval/messages-answer", "post-training/messages"])
    q.add_argument("--source", help="file://PATH of a CSV, JSONL or Parquet file (relative paths are made absolute)")
    q.add_argument("--rows-file", help="a local JSONL file whose rows are registered inline")
    q.add_argument("--provider")
    q.add_argument("--metadata", help="JSON")
    q.set_defaults(func=cmd_datasets_register)
    q = datasets.add_parser("rows", help="print rows as JSON lines")
    q.add_argument("dataset_id")
    q.add_argument("--start", type=int, default=0)
    q.add_argument("--limit", type=int, default=10)
    q.set_defaults(func=cmd_datasets_rows)
    q = datasets.add_parser("append", help="append the rows of a JSONL file")
    q.add_argument("dataset_id")
    q.add_argument("rows_file")
    q.set_defaults(func=cmd_datasets_append)

    q = collections["scoring-functions"].add_parser("register")
    q.add_argument("scoring_fn_id")
    q.add_argument("--provider", help="scoring provider_id, e.g. llm-as-judge or basic")
    q.add_argument("--provider-scoring-fn-id", help="the provider's function this one configures")
    q.add_argument("--description")
    q.add_argument("--return-type")
    q.add_argument("--params", help='JSON, e.g. {"judge_model": "M", "prompt_template": "...", '
                                    '"judge_score_regexes": ["Score: (\\\\d)"]}')
    q.set_defaults(func=cmd_scoring_functions_register)

    q = collections["benchmarks"].add_parser("register")
    q.add_argument("benchmark_id")
    q.add_argument("--dataset", required=True)
    q.add_argument("--scoring-functions", nargs="+", required=True)
    q.add_argument("--provider")
    q.set_defaults(func=cmd_benchmarks_register)

    safety = sub.add_parser("safety", help="run shields").add_subparsers(dest="op", required=True)
    q = safety.add_parser("check", help="check one message with a shield")
    q.add_argument("shield_id")
    q.add_argument("text")
    q.add_argument("--role", default="user", choices=["user", "assistant"])
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_safety_check)
    q = safety.add_parser("moderate", help="OpenAI-style moderation of texts")
    q.add_argument("text", nargs="+")
    q.add_argument("--shield", help="one shield (default: every registered shield)")
    q.set_defaults(func=cmd_safety_moderate)

    q = sub.add_parser("scoring", help="score rows").add_subparsers(dest="op", required=True).add_parser("score")
    q.add_argument("--functions", nargs="+", required=True)
    source = q.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="score every row of a registered dataset")
    source.add_argument("--rows-file", help="a local JSONL file of rows")
    q.add_argument("--params", help='JSON: {"function": {params}}')
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_scoring_score)

    ev = sub.add_parser("eval", help="evaluation jobs").add_subparsers(dest="op", required=True)
    q = ev.add_parser("run", help="start a job on a benchmark and follow it")
    q.add_argument("benchmark_id")
    q.add_argument("--model", required=True)
    q.add_argument("--max-tokens", type=int)
    q.add_argument("--temperature", type=float)
    q.add_argument("--system")
    q.add_argument("--num-examples", type=int)
    q.add_argument("--detach", action="store_true", help="print the job id and return")
    q.set_defaults(func=cmd_eval_run)
    for name, func, text in [("status", cmd_eval_status, "state and progress"),
                             ("result", cmd_eval_result, "generations and scores"),
                             ("cancel", cmd_eval_cancel, "stop a job")]:
        q = ev.add_parser(name, help=text)
        q.add_argument("job_id")
        if name == "status":
            q.add_argument("--follow", action="store_true", help="follow until the job ends")
        if name == "result":
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)
    q = ev.add_parser("jobs", help="list jobs")
    q.add_argument("--benchmark")
    q.set_defaults(func=cmd_eval_jobs)
