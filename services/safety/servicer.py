"""SafetyService: proto <-> domain around the core; no shield logic here."""

from __future__ import annotations

import grpc

from services.common.protoutil import struct, to_dict
from services.safety.core import SafetyCore
from services.safety.moderation import ModerationResult
from services.safety.providers.base import CallOptions, Message, Violation, ViolationLevel
from stackmesh.inference.v1 import inference_pb2 as ipb
from stackmesh.safety.v1 import safety_pb2 as pb, safety_pb2_grpc

__all__ = ["SafetyServicer"]

_LEVELS = {ViolationLevel.INFO: pb.VIOLATION_LEVEL_INFO, ViolationLevel.WARN: pb.VIOLATION_LEVEL_WARN,
           ViolationLevel.ERROR: pb.VIOLATION_LEVEL_ERROR}


def _message_in(message: ipb.ChatMessage) -> Message:
    return Message(role=message.role, content=message.content,
                   tool_calls=tuple((c.function.name, c.function.arguments) for c in message.tool_calls))


def _violation_out(violation: Violation) -> pb.SafetyViolation:
    return pb.SafetyViolation(violation_level=_LEVELS[violation.level], user_message=violation.user_message,
                              categories=violation.categories, metadata=struct(violation.metadata))


def _result_out(result: ModerationResult) -> pb.ModerationResult:
    return pb.ModerationResult(flagged=result.flagged, categories=result.categories,
                               category_scores=result.category_scores, user_message=result.user_message,
                               flagged_by=result.flagged_by, metadata=struct(result.metadata))


def _options(context: grpc.aio.ServicerContext) -> CallOptions:
    remaining = context.time_remaining()
    return CallOptions(timeout=remaining if remaining is not None and remaining < 1e8 else None,
                       metadata=tuple(context.invocation_metadata() or ()))


class SafetyServicer(safety_pb2_grpc.SafetyServiceServicer):
    def __init__(self, core: SafetyCore) -> None:
        self.core = core

    async def RunShield(self, request, context):
        violation = await self.core.run_shield(request.shield_id, [_message_in(m) for m in request.messages],
                                               to_dict(request.params), _options(context))
        return pb.RunShieldResponse(violation=_violation_out(violation) if violation else None)

    async def RunModeration(self, request, context):
        moderation = await self.core.moderate(request.model, list(request.input), _options(context))
        return pb.RunModerationResponse(id=moderation.id, model=moderation.model,
                                        results=[_result_out(r) for r in moderation.results])
