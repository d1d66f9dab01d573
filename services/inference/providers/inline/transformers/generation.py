"""One generation with transformers, in the OpenAI request's terms; runs in a worker thread.

Sampling is what the request says (OpenAI semantics: temperature 0 is greedy, no hidden top-k), not
the folder's ``generation_config.json``, whose sampling defaults would make the same request answer
differently per model; only its eos/pad ids are used. ``stop`` strings end generation in the thread
(a stopping criterion) and are cut from the text, as OpenAI does; streams hold back text that may be
the start of a stop string (``StopScanner``) so a stop never reaches the caller half-sent.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
from typing import Any, Callable

from services.common.errors import FailedPrecondition, InvalidArgument
from services.inference.providers.inline.transformers.loading import LoadedBase

__all__ = ["Sampling", "Generation", "StopScanner", "sampling_from", "chat_prompt", "run_generation"]

PromptBuilder = Callable[[Any], str]  # tokenizer -> prompt text


@dataclasses.dataclass(frozen=True)
class Sampling:
    """The request's generation parameters, validated."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclasses.dataclass(frozen=True)
class Generation:
    """What came out: the text (stop string cut), token counts and why it ended."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


def _number(request: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = request.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidArgument(f"{key} must be a number in [{low}, {high}], got {value!r}", reason="BAD_SAMPLING",
                              metadata={"field": key})
    return float(value)


def sampling_from(request: dict[str, Any], default_max_tokens: int, default_temperature: float) -> Sampling:
    """Validate the OpenAI sampling fields; a field this provider cannot honour is refused, never ignored."""
    max_tokens = request.get("max_tokens") or default_max_tokens
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidArgument(f"max_tokens must be a positive integer, got {max_tokens!r}", reason="BAD_SAMPLING",
                              metadata={"field": "max_tokens"})
    stop = request.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(s for s in stop if s)
    if not all(isinstance(s, str) for s in stop):
        raise InvalidArgument("stop must be a string or a list of strings", reason="BAD_SAMPLING",
                              metadata={"field": "stop"})
    seed = request.get("seed")
    return Sampling(max_tokens=max_tokens,
                    temperature=_number(request, "temperature", default_temperature, 0.0, 2.0),
                    top_p=max(_number(request, "top_p", 1.0, 0.0, 1.0), 1e-6),  # 0: only the top token
                    stop=stop, seed=int(seed) if seed is not None else None,
                    presence_penalty=_number(request, "presence_penalty", 0.0, -2.0, 2.0),
                    frequency_penalty=_number(request, "frequency_penalty", 0.0, -2.0, 2.0))


def _text_of(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:  # OpenAI content parts: only text can be fed to a text model
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidArgument(f"messages[{index}] holds a '{kind}' part; this text-only model takes text parts",
                                  reason="UNSUPPORTED_CONTENT")
        parts.append(part.get("text") or "")
    return "".join(parts)


def chat_prompt(messages: list[dict[str, Any]]) -> PromptBuilder:
    """A builder that renders ``messages`` with the tokenizer's chat template, ready for the answer."""
    rendered = []
    for i, message in enumerate(messages):
        out = {k: v for k, v in message.items() if v is not None}
        out["content"] = _text_of(message.get("content"), i)
        rendered.append(out)

    def build(tokenizer: Any) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise FailedPrecondition("this model's tokenizer has no chat template, so it cannot chat; use Completion "
                                     "with a raw prompt, or register a model folder that has one",
                                     reason="NO_CHAT_TEMPLATE")
        return tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)

    return build


class StopScanner:
    """Streams text with stop strings cut out: emits what can no longer turn into a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.pending += text
        cut = _first_stop(self.pending, self.stops)
        if cut is not None:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = max((n for s in self.stops for n in range(min(len(s) - 1, len(self.pending)), 0, -1)
                    if self.pending.endswith(s[:n])), default=0)
        out, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _processors(prompt_len: int, sampling: Sampling) -> list[Any]:
    import torch
    from transformers import LogitsProcessor

    if not (sampling.presence_penalty or sampling.frequency_penalty):
        return []

    class OpenAIPenalties(LogitsProcessor):
        """OpenAI's presence/frequency penalties over the generated tokens (HF has only repetition_penalty)."""

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            generated = input_ids[:, prompt_len:]
            if generated.shape[1] == 0:
                return scores
            counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            return (scores - counts * sampling.frequency_penalty
                    - (counts > 0).to(scores.dtype) * sampling.presence_penalty)

    return [OpenAIPenalties()]


def _criteria(tokenizer: Any, prompt_len: int, stops: tuple[str, ...], cancelled: threading.Event) -> list[Any]:
    import torch
    from transformers import StoppingCriteria

    class StopOrCancel(StoppingCriteria):
        """Ends generation at a stop string, or as soon as the caller has gone away."""

        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
            done = cancelled.is_set() or bool(stops) and _first_stop(
                tokenizer.decode(input_ids[0, prompt_len:], skip_special_tokens=True), stops) is not None
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

    return [StopOrCancel()]


def _streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        """TextStreamer's incremental decoding (whole words, intact UTF-8), handed to a callback.

        TextIteratorStreamer would need one more thread per stream to drain its blocking queue into
        the event loop; the callback posts each piece to the loop directly."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def run_generation(base: LoadedBase, adapter_dir: pathlib.Path | None, build_prompt: PromptBuilder,
                   sampling: Sampling, *, add_special_tokens: bool, cancelled: threading.Event,
                   on_text: Callable[[str], None] | None = None) -> Generation:
    """Generate once (worker thread; the caller holds ``base.lock``): select the adapter, render, generate."""
    import torch
    from transformers import GenerationConfig

    with base.selected(adapter_dir) as model:
        tokenizer = base.tokenizer_for(adapter_dir)
        encoded = tokenizer(build_prompt(tokenizer), return_tensors="pt", add_special_tokens=add_special_tokens)
        prompt_len = int(encoded["input_ids"].shape[1])
        room = (base.context_length - prompt_len) if base.context_length else sampling.max_tokens
        if room < 1:
            raise InvalidArgument(f"the prompt is {prompt_len} tokens; this model's context holds "
                                  f"{base.context_length}: shorten the conversation", reason="PROMPT_TOO_LONG",
                                  metadata={"prompt_tokens": prompt_len, "context_length": base.context_length})
        max_new = min(sampling.max_tokens, room)
        eos = _eos_ids(model, tokenizer)
        sample = sampling.temperature > 1e-5
        config = GenerationConfig(
            max_new_tokens=max_new, do_sample=sample, eos_token_id=sorted(eos) or None,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=None),
            bos_token_id=getattr(model.generation_config, "bos_token_id", None),
            **({"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0} if sample else {}))
        if sample and sampling.seed is not None:
            torch.manual_seed(sampling.seed)  # process-wide RNG: reproducible while no other base samples at once
        with torch.inference_mode():
            output = model.generate(
                input_ids=encoded["input_ids"], attention_mask=encoded.get("attention_mask"),
                generation_config=config, logits_processor=_processors(prompt_len, sampling),
                stopping_criteria=_criteria(tokenizer, prompt_len, sampling.stop, cancelled),
                streamer=_streamer(tokenizer, on_text) if on_text else None)
    new = output[0, prompt_len:].tolist()
    ended_on_eos = bool(new) and new[-1] in eos
    if ended_on_eos:
        new = new[:-1]
    text = tokenizer.decode(new, skip_special_tokens=True)
    cut = _first_stop(text, sampling.stop)
    if cut is not None:
        text = text[:cut]
    finish = "stop" if cut is not None or ended_on_eos or len(new) < max_new else "length"
    return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=len(new), finish_reason=finish)
