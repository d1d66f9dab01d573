"""CLI commands for fine-tuning: ``stackmesh post-training sft|status|jobs|artifacts|cancel|delete-artifacts``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_commands"]


def _client(args: argparse.Namespace):
    from stackmesh.client import StackmeshClient

    return StackmeshClient(args.url)


def _job_line(job: Any) -> str:
    from stackmesh.client_training import TRAINING_JOB_STATES

    line = (f"job {job.job_id} {TRAINING_JOB_STATES.get(job.state, '?')} step {job.step}/{job.total_steps}"
            + (f" loss {job.loss:.4f}" if job.loss_curve else ""))
    if job.output_model:
        line += f" -> {job.output_model}"
    return line + (f": {job.error}" if job.error else "")


def _follow(sm: Any, job_id: str) -> Any:
    from stackmesh.cli_progress import follow
    from stackmesh.client_training import TRAINING_JOB_STATES

    return follow(sm.watch_training(job_id), lambda job: (job.step, job.total_steps),
                  lambda job: f"steps {TRAINING_JOB_STATES.get(job.state, '?')}"
                              + (f" loss {job.loss:.4f}" if job.loss_curve else ""),
                  lambda job: job.eta_seconds)  # from the step times, not the base conversion before them


def cmd_sft(args: argparse.Namespace) -> None:
    from stackmesh.post_training.v1 import post_training_pb2

    with _client(args) as sm:
        request = sm.sft_request(
            args.model, args.dataset, epochs=args.epochs, max_steps_per_epoch=args.max_steps_per_epoch,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, max_seq_len=args.max_seq_len,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            lora_rank=None if args.full else args.lora_rank, lora_alpha=args.lora_alpha,
            target_modules=args.target_modules, dropout=args.lora_dropout, merge_output=args.merge,
            output_model=args.output_model or "", seed=args.seed, validation_dataset_id=args.validation_dataset or "")
        job = sm.supervised_fine_tune(request)
        print(job.job_id, flush=True)
        if args.detach:
            return
        job = _follow(sm, job.job_id)
        print(_job_line(job))
        if job.state != post_training_pb2.JOB_STATE_COMPLETED:
            sys.exit(1)


def cmd_status(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        job = _follow(sm, args.job_id) if args.follow else sm.training_job(args.job_id)
        if args.json:
            print(json.dumps(sm.to_dict(job), indent=2))
            return
    print(_job_line(job))
    if job.loss_curve:
        first, last = job.loss_curve[0], job.loss_curve[-1]
        print(f"loss: step {first.step} {first.loss:.4f} -> step {last.step} {last.loss:.4f}"
              f" ({len(job.loss_curve)} points)")


def cmd_jobs(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        for job in sm.training_jobs():
            print(f"{_job_line(job)}  model {job.model}")


def cmd_artifacts(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        print(json.dumps(sm.to_dict(sm.training_artifacts(args.job_id)), indent=2))


def cmd_cancel(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        print(_job_line(sm.cancel_training(args.job_id)))


def cmd_delete_artifacts(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        freed = sm.delete_training_artifacts(args.job_id)
    print(f"deleted the files of job {args.job_id} ({freed / 1e6:.1f} MB)")


def add_commands(sub: Any) -> None:
    pt = sub.add_parser("post-training", help="fine-tune models").add_subparsers(dest="op", required=True)
    q = pt.add_parser("sft", help="supervised fine-tuning (LoRA by default); prints the job id, then progress")
    q.add_argument("--model", required=True, help="the base model (a registered local LLM)")
    q.add_argument("--dataset", required=True, help="a dataset of purpose post-training/messages")
    q.add_argument("--validation-dataset")
    q.add_argument("--output-model", help="register the result under this model id")
    q.add_argument("--epochs", type=int, default=1)
    q.add_argument("--max-steps-per-epoch", type=int, default=0, help="0 = every batch")
    q.add_argument("--batch-size", type=int, default=4)
    q.add_argument("--gradient-accumulation-steps", type=int, default=1)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--weight-decay", type=float, default=0.0)
    q.add_argument("--max-seq-len", type=int, default=0, help="tokens per example (default 256)")
    q.add_argument("--lora-rank", type=int, default=8)
    q.add_argument("--lora-alpha", type=int, default=16)
    q.add_argument("--lora-dropout", type=float, default=0.0)
    q.add_argument("--target-modules", nargs="+", help="default: q_proj v_proj")
    q.add_argument("--full", action="store_true", help="train every weight instead of a LoRA adapter")
    q.add_argument("--merge", action="store_true", help="also save base + adapter merged")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--detach", action="store_true", help="print the job id and return")
    q.set_defaults(func=cmd_sft)
    q = pt.add_parser("status", help="state, step, loss")
    q.add_argument("job_id")
    q.add_argument("--follow", action="store_true")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)
    q = pt.add_parser("jobs", help="list jobs")
    q.set_defaults(func=cmd_jobs)
    for name, func, text in [("artifacts", cmd_artifacts, "checkpoints, adapter, merged model"),
                             ("cancel", cmd_cancel, "stop a job"),
                             ("delete-artifacts", cmd_delete_artifacts, "delete a job's files (refused while "
                                                                        "a registered model uses them)")]:
        q = pt.add_parser(name, help=text)
        q.add_argument("job_id")
        q.set_defaults(func=func)
