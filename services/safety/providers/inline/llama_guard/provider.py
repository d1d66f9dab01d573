"""``inline::llama-guard``: ask the shield's model (a registered LLM, served by the inference service
through the mesh) the Llama Guard prompt, and read its verdict.

The shield's ``provider_shield_id`` names the model. Excluded categories come from the provider
config, the shield's registered params and the call's params (all three add up). Every failure of
the model call is an error, never a verdict: inference down is UNAVAILABLE naming the inference
service; a model gone since registration is FAILED_PRECONDITION naming the model; the model's own
errors keep their code.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import grpc

from services.common.errors import (DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound,
                                    StackmeshError, Unavailable, error_info_from_rpc_error)
from services.safety.providers.base import CallOptions, Message, SafetyProvider, ShieldTarget, Violation
from services.safety.providers.inline.llama_guard.config import LlamaGuardConfig
from services.safety.providers.inline.llama_guard.prompt import build_prompt
from services.safety.providers.inline.llama_guard.taxonomy import CATEGORIES, validate_codes
from services.safety.providers.inline.llama_guard.verdict import UnparseablePolicy, decide, parse_verdict
from stackmesh.common.v1 import common_pb2
from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc

__all__ = ["LlamaGuardProvider", "PARAM_KEYS"]

log = logging.getLogger("stackmesh.safety.llama_guard")
MODEL = common_pb2.RESOURCE_TYPE_MODEL
PARAM_KEYS = ("excluded_categories",)
# Trace context and request ids a caller sent travel on to the inference service.
_PROPAGATED = ("traceparent", "tracestate", "x-request-id")
_BY_CODE: dict[grpc.StatusCode, type[StackmeshError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, Unavailable, DeadlineExceeded)}


def _excluded(params: dict[str, Any], where: str) -> list[str]:
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown llama-guard parameter {', '.join(unknown)}; accepted: "
                              f"{', '.join(PARAM_KEYS)}", reason="BAD_SHIELD_PARAMS")
    codes = params.get("excluded_categories") or []
    if not isinstance(codes, list):
        raise InvalidArgument(f"{where}: excluded_categories must be a list of codes like [\"S6\"]",
                              reason="BAD_SHIELD_PARAMS")
    try:
        return validate_codes(codes, f"{where}.excluded_categories")
    except ValueError as err:
        raise InvalidArgument(str(err), reason="BAD_SHIELD_PARAMS") from None


def _model_error(err: grpc.aio.AioRpcError, shield: ShieldTarget, model: str) -> StackmeshError:
    """The caller-facing error for a failed model call (see the module docstring)."""
    info = error_info_from_rpc_error(err)
    code, details = err.code(), err.details() or ""
    where = f"shield '{shield.shield_id}' asks model '{model}'"
    if code == grpc.StatusCode.UNAVAILABLE and info is None:  # no stackmesh server answered: transport failure
        return Unavailable(f"{where} through the inference service, which cannot be reached ({details}); "
                           f"check that the inference service is running (mesh.services.inference)",
                           reason="INFERENCE_UNAVAILABLE", metadata={"shield_id": shield.shield_id, "model": model})
    if code == grpc.StatusCode.NOT_FOUND:
        return FailedPrecondition(f"{where}, which is no longer registered ({details}); register the model again "
                                  f"or re-register the shield with another model", reason="SHIELD_MODEL_NOT_FOUND",
                                  metadata={"shield_id": shield.shield_id, "model": model})
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{where}, which did not answer in time ({details})", reason="SHIELD_MODEL_TIMEOUT",
                                metadata={"shield_id": shield.shield_id, "model": model})
    error = _BY_CODE.get(code, StackmeshError)(f"{where}: {code.name}: {details}",
                                               reason=info.reason if info else code.name,
                                               metadata=dict(info.metadata) if info else None)
    error.code = code  # the model's own error keeps its code
    return error


class LlamaGuardProvider(SafetyProvider):
    config: LlamaGuardConfig

    def __init__(self, provider_id: str, config: LlamaGuardConfig, defaults: dict[str, Any]) -> None:
        super().__init__(provider_id, config, defaults)
        self._stub: inference_pb2_grpc.InferenceServiceStub | None = None

    @property
    def stub(self) -> inference_pb2_grpc.InferenceServiceStub:
        if self._stub is None:
            if self.mesh is None:
                raise Unavailable("the llama-guard provider has no mesh client; the safety service did not attach it")
            self._stub = inference_pb2_grpc.InferenceServiceStub(self.mesh.channel("inference"))
        return self._stub

    def excluded_for(self, shield: ShieldTarget, params: dict[str, Any]) -> list[str]:
        codes = [*self.config.excluded_categories,
                 *_excluded(shield.params, f"shield '{shield.shield_id}' params"),
                 *_excluded(params, "params")]
        return list(dict.fromkeys(codes))

    def moderation_categories(self, shield: ShieldTarget) -> dict[str, str]:
        skipped = set(self.excluded_for(shield, {}))
        return {c.code: c.moderation_name for c in CATEGORIES if c.code not in skipped}

    async def _check_model(self, shield: ShieldTarget, model: str) -> None:
        """Say clearly when the shield's model is gone or is not a chat model (the registry checked at
        registration; the model may have been unregistered or replaced since)."""
        if self.cache is None:
            return
        try:
            resource = await self.cache.resolve_fresh(MODEL, model)
        except NotFound:
            resource = None
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                return  # the registry is unreachable: the inference call decides
            resource = None
        if resource is None:
            raise FailedPrecondition(f"shield '{shield.shield_id}' asks model '{model}', which is no longer "
                                     f"registered; register the model again or re-register the shield with another "
                                     f"model (`stackmesh models list`)", reason="SHIELD_MODEL_NOT_FOUND",
                                     metadata={"shield_id": shield.shield_id, "model": model})
        if resource.WhichOneof("spec") == "model" and resource.model.model_type not in (
                common_pb2.MODEL_TYPE_LLM, common_pb2.MODEL_TYPE_UNSPECIFIED):
            kind = common_pb2.ModelType.Name(resource.model.model_type).removeprefix("MODEL_TYPE_").lower()
            raise FailedPrecondition(f"shield '{shield.shield_id}' asks model '{model}', which is an {kind} model; "
                                     f"a llama-guard shield needs an LLM: re-register the shield with one",
                                     reason="SHIELD_MODEL_WRONG_TYPE",
                                     metadata={"shield_id": shield.shield_id, "model": model, "model_type": kind})

    async def ask(self, shield: ShieldTarget, prompt: str, options: CallOptions) -> str:
        """The model's raw answer to ``prompt`` (greedy, short)."""
        model = shield.provider_shield_id
        await self._check_model(shield, model)
        request = ipb.ChatCompletionRequest(
            model=model, messages=[ipb.ChatMessage(role="user", content=prompt)],
            sampling=ipb.SamplingParams(temperature=0.0, max_tokens=self.config.max_tokens))
        forwarded = tuple((k, v) for k, v in options.metadata if k in _PROPAGATED)
        timeout = options.timeout if options.timeout is not None else self.config.timeout_seconds
        try:
            reply = await self.stub.ChatCompletion(request, timeout=timeout, metadata=forwarded)
        except grpc.aio.AioRpcError as err:
            raise _model_error(err, shield, model) from None
        return reply.choices[0].message.content if reply.choices else ""

    async def run_shield(self, shield: ShieldTarget, messages: Sequence[Message], params: dict[str, Any],
                         options: CallOptions) -> Violation | None:
        if not shield.provider_shield_id:
            raise FailedPrecondition(f"shield '{shield.shield_id}' names no model; re-register it with "
                                     f"provider_shield_id set to an LLM", reason="SHIELD_MODEL_MISSING")
        excluded = self.excluded_for(shield, params)
        prompt = build_prompt(messages, excluded)
        started = time.perf_counter()
        raw = await self.ask(shield, prompt, options)
        verdict = parse_verdict(raw)
        violation = decide(verdict, excluded, UnparseablePolicy(self.config.on_unparseable))
        log.info("shield=%s model=%s verdict=%s violation=%s seconds=%.2f", shield.shield_id,
                 shield.provider_shield_id, verdict.outcome.value, violation.level.name if violation else "none",
                 time.perf_counter() - started)
        if violation is not None:
            violation.metadata["model"] = shield.provider_shield_id
        return violation
