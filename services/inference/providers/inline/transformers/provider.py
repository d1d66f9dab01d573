"""``inline::transformers``: serves models fine-tuned by post_training — LoRA adapters over a base, or
full (merged) model folders — with transformers + peft inside the inference service's process.

Tuned models are registered by post_training (or by a user, with a local folder as
``provider_model_id``), never discovered: ``list_models`` returns None so the registry keeps them.
Weights load lazily on a model's first request, in a worker thread. Bases stay in an LRU cache
(``max_loaded_bases``); all adapters of one base share one copy of its weights (see ``loading``).

Concurrency: generation on one base is serialized by that base's ``asyncio.Lock``, held from adapter
selection to the last token (selecting an adapter mutates the shared model); waiting happens on the
event loop, not in threads. Different bases generate in parallel. A caller that goes away stops its
generation at the next token, and the lock is held until the thread has really finished.
peft's per-request ``adapter_names`` works on CPU too, but it hooks the shared modules for the call,
so concurrent calls would still collide; it pays off only to batch several adapters in one forward
pass, which this provider does not do. So: ``set_adapter`` (or ``disable_adapter`` for the plain
base) under the lock.

Memory: a float32 SmolLM2-135M base is ~540 MB; an r=8 q/v adapter adds ~2 MB (and its tokenizer when
saved beside it); an evicted base is freed when its last generation ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable

from services.common.errors import InvalidArgument, Unimplemented
from services.inference.providers.base import InferenceProvider, ModelTarget
from services.inference.providers.inline.transformers.generation import (
    Generation, PromptBuilder, Sampling, StopScanner, chat_prompt, run_generation, sampling_from)
from services.inference.providers.inline.transformers.loading import (
    BaseCache, LoadedBase, ServedModel, resolve_served_model)

__all__ = ["TransformersProvider"]

_END = object()


def _refuse_unsupported(request: dict[str, Any]) -> None:
    """Fields this provider cannot honour are refused with a reason: never silently dropped."""
    if request.get("tools") and request.get("tool_choice") != "none":
        raise Unimplemented("inline::transformers cannot call tools (no constrained decoding of tool calls); send the "
                            "request without tools, with tool_choice 'none', or use a model served by "
                            "inline::llama-cpp or a remote provider", reason="TOOLS_UNSUPPORTED")
    fmt = request.get("response_format")
    if fmt and fmt.get("type") not in (None, "text"):
        raise Unimplemented(f"inline::transformers cannot constrain output to response_format '{fmt.get('type')}'; "
                            "ask for JSON in the prompt, or use inline::llama-cpp (grammar-constrained JSON)",
                            reason="RESPONSE_FORMAT_UNSUPPORTED")
    if (request.get("n") or 1) != 1:
        raise InvalidArgument("inline::transformers returns one choice per request; send n=1", reason="BAD_SAMPLING")
    for key in ("logprobs", "top_logprobs", "logit_bias"):
        if request.get(key):
            raise Unimplemented(f"inline::transformers does not support {key}", reason="UNSUPPORTED_FIELD",
                                metadata={"field": key})


def _usage(result: Generation) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


async def _settle(future: asyncio.Future[Any]) -> None:
    """Wait for a worker thread to finish, whatever happens to the awaiting task meanwhile."""
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # retrieved: never "exception was never retrieved"


class TransformersProvider(InferenceProvider):
    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self.bases = BaseCache(config.max_loaded_bases, config.dtype)

    async def initialize(self) -> None:
        # Never reach for a hub: every model is a folder on this machine.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)  # process-wide; worker threads inherit it

    async def shutdown(self) -> None:
        self.bases.clear()

    async def list_models(self) -> None:
        """Tuned models are registered by post_training, not discovered: None keeps every registration."""
        return None

    # ------------------------------------------------------------------ running one generation
    def _prepare(self, model: ModelTarget, request: dict[str, Any]) -> tuple[ServedModel, Sampling]:
        _refuse_unsupported(request)
        return resolve_served_model(model), sampling_from(request, self.config.max_new_tokens, self.config.temperature)

    @contextlib.asynccontextmanager
    async def _holding(self, served: ServedModel) -> AsyncIterator[LoadedBase]:
        """The served model's base, its lock held: one generation at a time per base."""
        while True:
            base = await self.bases.get(served.base_dir)
            await base.lock.acquire()
            if not base.broken:
                break
            base.lock.release()  # an adapter failed to apply while we queued: use the reloaded base
        try:
            yield base
        finally:
            base.lock.release()

    async def _generate(self, model: ModelTarget, request: dict[str, Any], build: PromptBuilder,
                        add_special_tokens: bool) -> Generation:
        served, sampling = self._prepare(model, request)
        cancelled = threading.Event()
        async with self._holding(served) as base:
            job = functools.partial(run_generation, base, served.adapter_dir, build, sampling,
                                    add_special_tokens=add_special_tokens, cancelled=cancelled)
            future = asyncio.get_running_loop().run_in_executor(None, job)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                cancelled.set()  # the caller went away: stop at the next token, keep the lock until then
                await _settle(future)
                raise

    async def _stream(self, model: ModelTarget, request: dict[str, Any], build: PromptBuilder,
                      add_special_tokens: bool) -> AsyncIterator[tuple[str, Generation | None]]:
        """(text piece, None)... then ("", the finished Generation); stop strings already cut."""
        served, sampling = self._prepare(model, request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        scanner = StopScanner(sampling.stop)
        async with self._holding(served) as base:
            job = functools.partial(run_generation, base, served.adapter_dir, build, sampling,
                                    add_special_tokens=add_special_tokens, cancelled=cancelled,
                                    on_text=lambda text: loop.call_soon_threadsafe(queue.put_nowait, text))
            future = loop.run_in_executor(None, job)
            # Runs on the loop after every piece the thread posted (call_soon_threadsafe keeps order).
            future.add_done_callback(lambda _: queue.put_nowait(_END))
            try:
                while (item := await queue.get()) is not _END:
                    if piece := scanner.feed(item):
                        yield piece, None
                result = future.result()  # the thread's error, if any, surfaces here
                if tail := scanner.flush():
                    yield tail, None
                yield "", result
            finally:
                cancelled.set()  # no-op when finished; stops the thread when the consumer left early
                await _settle(future)

    # ------------------------------------------------------------------ the OpenAI-shaped API
    @staticmethod
    def _envelope(kind: str, model: ModelTarget) -> dict[str, Any]:
        prefix = {"chat.completion": "chatcmpl", "chat.completion.chunk": "chatcmpl", "text_completion": "cmpl"}[kind]
        return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
                "model": model.identifier}

    @staticmethod
    def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
        messages = request.get("messages")
        if not messages:
            raise InvalidArgument("messages must not be empty", reason="MESSAGES_MISSING")
        return messages

    async def chat_completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        result = await self._generate(model, request, chat_prompt(self._messages(request)), add_special_tokens=False)
        return {**self._envelope("chat.completion", model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "logprobs": None, "finish_reason": result.finish_reason}],
                "usage": _usage(result)}

    async def stream_chat_completion(self, model: ModelTarget, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        build = chat_prompt(self._messages(request))
        envelope = self._envelope("chat.completion.chunk", model)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
            return {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}], **extra}

        first = True
        async for piece, result in self._stream(model, request, build, add_special_tokens=False):
            if first:  # after the model loaded and the prompt fitted: errors come before any chunk
                yield chunk({"role": "assistant", "content": ""})
                first = False
            if result is None:
                yield chunk({"content": piece})
            else:
                yield chunk({}, result.finish_reason, usage=_usage(result))

    async def completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            raise InvalidArgument("prompt must be one string", reason="BAD_PROMPT")
        build: Callable[[Any], str] = lambda _tokenizer: prompt  # noqa: E731 - raw text, no template
        result = await self._generate(model, request, build, add_special_tokens=True)
        return {**self._envelope("text_completion", model),
                "choices": [{"index": 0, "text": result.text, "logprobs": None,
                             "finish_reason": result.finish_reason}],
                "usage": _usage(result)}
