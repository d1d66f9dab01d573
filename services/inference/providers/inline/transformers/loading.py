"""What a served model is made of, and loading it: base folders (LRU-cached) and LoRA adapters over them.

A registered model's ``provider_model_id`` is a folder. With ``adapter_config.json`` it is a peft LoRA
adapter over a base folder (``metadata.base_path``, else the adapter config's
``base_model_name_or_path``); without, it is a full transformers model (merged or fully fine-tuned).

Adapters of one base share its weights: each base is loaded once into a ``LoadedBase``; the first
adapter wraps it in a ``PeftModel`` and every further adapter is added to that same model under its
own name (``load_adapter``), a few MB each. Choosing the adapter (``set_adapter``) mutates the shared
model, so the caller must hold ``LoadedBase.lock`` from the choice until generation ends: generation
on one base is serialized, bases run in parallel.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import pathlib
from typing import Any, Iterator

from services.common.errors import FailedPrecondition
from services.inference.providers.base import ModelTarget

__all__ = ["ServedModel", "LoadedBase", "BaseCache", "resolve_served_model"]

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """A request's model on disk: a base folder and, for a tuned adapter, the adapter folder."""

    base_dir: pathlib.Path
    adapter_dir: pathlib.Path | None = None


def _not_local(target: ModelTarget, message: str, path: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason="MODEL_NOT_LOCAL",
                              metadata={"model": target.identifier, "path": path})


def resolve_served_model(target: ModelTarget) -> ServedModel:
    """Apply the post_training contract to a registered model; cheap (a few stat calls)."""
    raw = target.provider_model_id
    folder = pathlib.Path(raw).expanduser()
    if folder.suffix == ".gguf":
        raise _not_local(target, f"model '{target.identifier}' points at a GGUF file ({raw}); serve it with "
                         "inline::llama-cpp, or convert it to a transformers folder", raw)
    if not folder.is_dir():
        raise _not_local(target, f"model '{target.identifier}' is served from the folder '{raw}', which does not "
                         "exist on this machine; stackmesh never downloads weights. Register a local transformers "
                         "model folder or LoRA adapter folder (the inference service must see the same files)", raw)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return ServedModel(folder.resolve())
    base = target.metadata.get("base_path")
    if not base:
        try:
            base = json.loads(config_file.read_text()).get("base_model_name_or_path")
        except (OSError, ValueError) as err:
            raise FailedPrecondition(f"LoRA adapter {folder}: adapter_config.json is unreadable ({err})",
                                     reason="ADAPTER_INVALID", metadata={"path": str(folder)}) from None
    base_dir = pathlib.Path(str(base or "")).expanduser()
    if not base or not base_dir.is_dir():
        raise _not_local(target, f"LoRA adapter {folder} needs its base model folder, but '{base or '(none)'}' is "
                         "not a folder on this machine; register the model with metadata.base_path set to the "
                         "base model's transformers folder", str(base or ""))
    return ServedModel(base_dir.resolve(), folder.resolve())


def _check_adapter(adapter_dir: pathlib.Path) -> None:
    """Read an adapter completely before it touches the shared model: a corrupt one fails here, cleanly."""
    from peft import PeftConfig

    try:
        config = PeftConfig.from_pretrained(str(adapter_dir))
        if str(getattr(config.peft_type, "value", config.peft_type)) != "LORA":
            raise ValueError(f"it is a {config.peft_type} adapter; only LoRA adapters are served (merge others "
                             "into the base and register the merged folder)")
        weights = next((adapter_dir / n for n in _ADAPTER_WEIGHTS if (adapter_dir / n).is_file()), None)
        if weights is None:
            raise ValueError(f"it holds none of {', '.join(_ADAPTER_WEIGHTS)}")
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(weights))
        else:
            import torch

            tensors = torch.load(str(weights), map_location="cpu", weights_only=True)
        if not tensors:
            raise ValueError(f"{weights.name} holds no tensors")
    except Exception as err:  # noqa: BLE001 - every way an adapter can be broken ends up here
        raise FailedPrecondition(f"LoRA adapter {adapter_dir} cannot be loaded: {err}", reason="ADAPTER_INVALID",
                                 metadata={"path": str(adapter_dir)}) from None


class LoadedBase:
    """One base model in memory, with the adapters loaded over it. Use only under ``lock``."""

    def __init__(self, path: pathlib.Path, model: Any, tokenizer: Any) -> None:
        self.path = path
        self.model = model
        self.tokenizer = tokenizer
        self.lock = asyncio.Lock()  # held (on the event loop) for the whole of one generation
        self.peft: Any = None  # the PeftModel wrapping ``model`` once an adapter is loaded
        self.adapters: dict[pathlib.Path, tuple[str, Any]] = {}  # folder -> (adapter name, tokenizer)
        self.broken = False  # a failed adapter injection may have half-modified the model: reload it
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0)

    def _add_adapter(self, adapter_dir: pathlib.Path) -> tuple[str, Any]:
        _check_adapter(adapter_dir)
        name = "a" + hashlib.sha1(str(adapter_dir).encode()).hexdigest()[:12]  # no dots: a module name
        try:
            if self.peft is None:
                from peft import PeftModel

                self.peft = PeftModel.from_pretrained(self.model, str(adapter_dir), adapter_name=name,
                                                      is_trainable=False)
                self.peft.eval()
            else:
                result = self.peft.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
                if getattr(result, "unexpected_keys", None):
                    self.peft.delete_adapter(name)
                    raise ValueError(f"its weights do not fit this base ({result.unexpected_keys[:3]} ...)")
        except Exception as err:  # noqa: BLE001
            self.broken = True
            raise FailedPrecondition(f"LoRA adapter {adapter_dir} cannot be applied to the base model "
                                     f"{self.path}: {err}", reason="ADAPTER_INVALID",
                                     metadata={"path": str(adapter_dir), "base_path": str(self.path)}) from None
        tokenizer = self.tokenizer
        if (adapter_dir / "tokenizer_config.json").is_file():  # saved with the adapter: may carry a new template
            tokenizer = _load_tokenizer(adapter_dir)
        self.adapters[adapter_dir] = (name, tokenizer)
        return self.adapters[adapter_dir]

    def tokenizer_for(self, adapter_dir: pathlib.Path | None) -> Any:
        """The tokenizer of an adapter already loaded (its own if it has one), else the base's."""
        return self.adapters.get(adapter_dir, (None, self.tokenizer))[1] if adapter_dir else self.tokenizer

    @contextlib.contextmanager
    def selected(self, adapter_dir: pathlib.Path | None) -> Iterator[Any]:
        """The model to generate with: the adapter active, or every adapter off for the plain base.

        Runs in a worker thread (loading an adapter reads files) while the caller holds ``lock``."""
        if adapter_dir is None:
            if self.peft is None:
                yield self.model
            else:
                with self.peft.disable_adapter():
                    yield self.peft
            return
        name, _ = self.adapters.get(adapter_dir) or self._add_adapter(adapter_dir)
        self.peft.set_adapter(name, inference_mode=True)
        yield self.peft


def _load_tokenizer(folder: pathlib.Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _load_base(path: pathlib.Path, dtype: str) -> LoadedBase:
    """Load a transformers folder; anything that is not a causal LM folder is a FAILED_PRECONDITION."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    def refuse(why: str) -> FailedPrecondition:
        return FailedPrecondition(f"{path} is not a model this provider can serve: {why}",
                                  reason="MODEL_NOT_SERVABLE", metadata={"path": str(path)})

    if not (path / "config.json").is_file():
        raise refuse("it has no config.json (expected a transformers causal-LM folder, or a LoRA adapter folder "
                     "with adapter_config.json)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001
        raise refuse(f"its config.json cannot be read ({err})") from None
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not causal.intersection(architectures):
        raise refuse(f"its architecture {', '.join(architectures)} does not generate text (not a causal LM)")
    try:
        tokenizer = _load_tokenizer(path)
    except Exception as err:  # noqa: BLE001
        raise refuse(f"its tokenizer cannot be loaded ({err})") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    except Exception as err:  # noqa: BLE001
        raise refuse(f"loading its weights failed ({err})") from None
    model.eval()
    return LoadedBase(path, model, tokenizer)


class BaseCache:
    """Base models by folder, least recently used evicted beyond ``capacity``; each loaded once.

    Event-loop side only. A load is one shared task: concurrent first requests wait for the same
    load, and a caller that goes away does not waste it. An evicted base is freed when the last
    generation holding it ends."""

    def __init__(self, capacity: int, dtype: str) -> None:
        self.capacity = capacity
        self.dtype = dtype
        self.loads = 0  # how many times a base was read from disk (tests: adapters share one load)
        self._bases: collections.OrderedDict[pathlib.Path, LoadedBase] = collections.OrderedDict()
        self._pending: dict[pathlib.Path, asyncio.Future[LoadedBase]] = {}

    def loaded(self) -> list[pathlib.Path]:
        """The folders in memory, least recently used first."""
        return list(self._bases)

    async def get(self, path: pathlib.Path) -> LoadedBase:
        base = self._bases.get(path)
        if base is not None and not base.broken:
            self._bases.move_to_end(path)
            return base
        pending = self._pending.get(path)
        if pending is None:
            pending = self._pending[path] = asyncio.ensure_future(self._load(path))
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())  # seen, even if unawaited
        return await asyncio.shield(pending)

    async def _load(self, path: pathlib.Path) -> LoadedBase:
        try:
            self._bases.pop(path, None)  # a broken one: its half-modified model is dropped
            base = await asyncio.to_thread(_load_base, path, self.dtype)
            self.loads += 1
            self._bases[path] = base
            while len(self._bases) > self.capacity:
                self._bases.popitem(last=False)
            return base
        finally:
            del self._pending[path]

    def clear(self) -> None:
        self._bases.clear()
