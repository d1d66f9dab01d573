"""The training loop of one job, run inside the worker process (never in the service's event loop).

Steps are optimizer steps: ``gradient_accumulation_steps`` micro-batches of ``batch_size``
conversations, the loss averaged over their target tokens (so accumulation equals one big batch),
gradients clipped to norm 1, AdamW, an optional linear warm-up then a constant rate. Each epoch
visits the examples in an order fixed by (seed, epoch); a checkpoint records the position in that
order, so a resumed job sees exactly the batches it would have seen.

Everything the service learns comes through ``emit`` (one JSON object per event).
"""

from __future__ import annotations

import json
import math
import pathlib
import resource
import time
from typing import Any, Callable

from services.post_training.providers.base import TrainingSpec
from services.post_training.providers.inline.huggingface import checkpoints as ckpt
from services.post_training.providers.inline.huggingface.bases import ensure_base, save_pretrained_unquantized
from services.post_training.providers.inline.huggingface.data import (IGNORE_INDEX, Example, batches_in_epoch, collate,
                                                                      encode_rows, epoch_order)

__all__ = ["JobFiles", "train", "peak_rss_mb"]

Emit = Callable[..., None]


class JobFiles:
    """The files of one job: ``job.json`` (what to run), rows, checkpoints, results."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.job = json.loads((folder / "job.json").read_text())
        self.spec = TrainingSpec.from_json(self.job["spec"])
        self.data_dir = pathlib.Path(self.job["data_dir"])
        self.checkpoints = folder / "checkpoints"
        self.adapter = folder / "adapter"
        self.merged = folder / "merged"
        self.done = folder / "done.json"

    def rows(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _micro_batches(examples: list[Example], order: list[int], step_in_epoch: int,
                   spec: TrainingSpec) -> list[list[Example]]:
    n_batches = batches_in_epoch(len(examples), spec.batch_size)
    out = []
    for a in range(spec.gradient_accumulation_steps):
        index = step_in_epoch * spec.gradient_accumulation_steps + a
        if index < n_batches:
            out.append([examples[i] for i in order[index * spec.batch_size:(index + 1) * spec.batch_size]])
    return out


def _targets(batch: dict[str, Any]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # the model shifts labels by one


def _validation_loss(model: Any, examples: list[Example], spec: TrainingSpec, pad_id: int) -> float:
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), spec.batch_size):
            batch = collate(examples[start:start + spec.batch_size], pad_id)
            n = _targets(batch)
            if n:
                total += float(model(**batch).loss) * n
                tokens += n
    model.train()
    return total / tokens if tokens else float("nan")


def _model(files: JobFiles, base_dir: pathlib.Path, latest: Any, gradient_checkpointing: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    spec = files.spec
    source = latest[0] / "model" if latest is not None and not spec.lora else base_dir
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if spec.lora:
            model.enable_input_require_grads()
    if not spec.lora:
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    if latest is not None:
        return PeftModel.from_pretrained(model, str(latest[0] / "adapter"), is_trainable=True)
    return get_peft_model(model, LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha,
                                            lora_dropout=spec.lora_dropout, target_modules=list(spec.target_modules),
                                            task_type="CAUSAL_LM"))


def _save_results(files: JobFiles, model: Any, tokenizer: Any, base_dir: pathlib.Path, emit: Emit) -> dict[str, str]:
    import shutil

    spec, result = files.spec, {"adapter_path": "", "merged_path": "", "base_path": str(base_dir)}
    targets = ([("adapter", files.adapter)] if spec.lora else []) + ([("merged", files.merged)] if spec.merge_output
                                                                    else [])
    for kind, target in targets:
        emit("phase", phase=f"saving {kind}")
        tmp = target.parent / f".tmp-{target.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        if kind == "adapter":
            model.save_pretrained(str(tmp))
        else:
            merged = model.merge_and_unload() if spec.lora else model
            save_pretrained_unquantized(merged, tmp)
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        result[f"{kind}_path"] = str(target)
    return result


def train(files: JobFiles, emit: Emit, still_wanted: Callable[[], bool]) -> dict[str, str]:
    """Run (or resume) the job; returns its result paths. ``still_wanted`` is asked between steps
    (False: the service that started us is gone; stop without saving anything)."""
    import torch
    from transformers import AutoTokenizer

    spec, options = files.spec, files.job
    if options.get("torch_threads"):
        torch.set_num_threads(int(options["torch_threads"]))
    t0 = time.perf_counter()
    emit("phase", phase="preparing base model")
    base_dir, converted = ensure_base(files.data_dir, spec.base)
    emit("base", path=str(base_dir), converted=converted, seconds=round(time.perf_counter() - t0, 3))
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    examples, skipped = encode_rows(tokenizer, files.rows("rows.jsonl"), spec.max_seq_len)
    if not examples:
        raise ValueError(f"no row has an assistant turn within max_seq_len {spec.max_seq_len} tokens "
                         f"({skipped} rows skipped); raise max_seq_len or shorten the conversations")
    validation, _ = encode_rows(tokenizer, files.rows("validation.jsonl"), spec.max_seq_len)
    per_epoch = math.ceil(batches_in_epoch(len(examples), spec.batch_size) / spec.gradient_accumulation_steps)
    per_epoch = min(per_epoch, spec.max_steps_per_epoch) if spec.max_steps_per_epoch else per_epoch
    total = spec.n_epochs * per_epoch
    emit("prepared", examples=len(examples), skipped=skipped, total_steps=total, steps_per_epoch=per_epoch)

    torch.manual_seed(spec.seed)
    latest = ckpt.latest_checkpoint(files.checkpoints)
    model = _model(files, base_dir, latest, bool(options.get("gradient_checkpointing")))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    warmup = spec.num_warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    position = ckpt.Position(0, 0, 0)
    if latest is not None:
        ckpt.load_training_state(latest[0], optimizer, scheduler)
        position = latest[1]
    emit("start", step=position.step, epoch=position.epoch, checkpoint=str(latest[0]) if latest else "")
    model.train()
    step, logging_steps, every = position.step, int(options.get("logging_steps") or 1), spec.checkpoint_every_steps

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        path = ckpt.save_checkpoint(files.checkpoints, ckpt.Position(step, epoch, step_in_epoch), model, optimizer,
                                    scheduler, spec.lora)
        removed = ckpt.prune(files.checkpoints, int(options.get("save_total_limit") or 1))
        shown = epoch + 1 if step_in_epoch else epoch  # 1-based: the epoch the checkpoint was taken in
        emit("checkpoint", step=step, epoch=shown, path=str(path), removed=[str(p) for p in removed])

    for epoch in range(position.epoch, spec.n_epochs):
        order = epoch_order(len(examples), spec.seed, epoch, spec.shuffle)
        for k in range(position.step_in_epoch if epoch == position.epoch else 0, per_epoch):
            started = time.perf_counter()
            batches = [collate(b, pad_id) for b in _micro_batches(examples, order, k, spec)]
            tokens = sum(_targets(b) for b in batches) or 1
            loss_sum = 0.0
            for batch in batches:
                n = _targets(batch)
                if not n:
                    continue
                loss = model(**batch).loss
                (loss * (n / tokens)).backward()
                loss_sum += float(loss.detach()) * n
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % logging_steps == 0 or step == total:
                emit("step", step=step, epoch=epoch + 1, loss=loss_sum / tokens, total_steps=total,
                     seconds=round(time.perf_counter() - started, 4), peak_rss_mb=round(peak_rss_mb(), 1))
            if not still_wanted():
                return {}
            if every and step % every == 0 and step < total:
                checkpoint(epoch + (k + 1 == per_epoch), 0 if k + 1 == per_epoch else k + 1)
        if validation:
            emit("validation", step=step, epoch=epoch + 1, loss=_validation_loss(model, validation, spec, pad_id))
        if not every and epoch + 1 < spec.n_epochs:
            checkpoint(epoch + 1, 0)
    result = _save_results(files, model, tokenizer, base_dir, emit)
    tmp = files.done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.rename(files.done)
    return result
