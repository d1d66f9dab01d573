"""Base models in transformers format: a GGUF is dequantized and converted once, then shared.

Loading SmolLM2's GGUF through transformers takes 30-60 s and about 1 GiB; the converted folder
loads in under a second. The folder is keyed by the GGUF's path, size and modification time
(``<data>/bases/<stem>-<hash>/``): a replaced file gets a new folder, a re-registered one the same.
Conversion writes a temporary folder and renames it into place, so a folder that exists is
complete, and an exclusive file lock makes concurrent jobs (or replicas sharing the folder) wait
for one conversion instead of doing two.
"""

from __future__ import annotations

import fcntl
import hashlib
import pathlib
import shutil
import uuid

from services.post_training.providers.base import BaseSource

__all__ = ["base_key", "base_folder", "ensure_base", "save_pretrained_unquantized"]


def base_key(source: BaseSource) -> str:
    """A stable, file-system-safe key of a GGUF: its stem and a hash of (path, size, mtime)."""
    digest = hashlib.sha256(f"{source.path}\0{source.size}\0{source.mtime!r}".encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in pathlib.Path(source.path).stem)[:60]
    return f"{stem}-{digest}"


def base_folder(data_dir: pathlib.Path, source: BaseSource) -> pathlib.Path:
    """Where the job's base model is in transformers format (a GGUF's converted copy, or the
    transformers folder itself)."""
    if source.kind != "gguf":
        return pathlib.Path(source.path)
    return data_dir / "bases" / base_key(source)


def save_pretrained_unquantized(model: object, folder: pathlib.Path) -> None:
    """``save_pretrained`` of a model loaded from a GGUF: it is flagged as quantized with gguf,
    which transformers refuses to serialize, although its weights are plain dequantized tensors."""
    model.hf_quantizer = None  # type: ignore[attr-defined]
    config = model.config  # type: ignore[attr-defined]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model.save_pretrained(str(folder))  # type: ignore[attr-defined]


def _convert(source: BaseSource, target: pathlib.Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = pathlib.Path(source.path)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    save_pretrained_unquantized(model, target)
    tokenizer.save_pretrained(str(target))


def ensure_base(data_dir: pathlib.Path, source: BaseSource) -> tuple[pathlib.Path, bool]:
    """(the base's transformers folder, whether it was converted now). Raises FileNotFoundError
    when a GGUF that must be converted is missing or changed since the job was queued."""
    folder = base_folder(data_dir, source)
    if source.kind != "gguf":
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"base model folder {folder} has no config.json")
        return folder, False
    if (folder / "config.json").is_file():
        return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        if (folder / "config.json").is_file():  # converted by someone else while we waited
            return folder, False
        gguf = pathlib.Path(source.path)
        if not gguf.is_file():
            raise FileNotFoundError(f"base GGUF {gguf} no longer exists")
        stat = gguf.stat()
        if stat.st_size != source.size or stat.st_mtime != source.mtime:
            raise FileNotFoundError(f"base GGUF {gguf} changed since the job was queued")
        tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
        try:
            _convert(source, tmp)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, True
