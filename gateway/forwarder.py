"""Byte-level forwarding of public calls to the backend service that serves them.

Requests and responses are never parsed (identity serializers): the gateway adds one hop and no
(de)serialization. The caller's deadline and metadata (trace context included) go with the call;
a backend's status and rich error details come back unchanged; server streams are relayed message
by message, as each arrives.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import grpc

from gateway.routes import PUBLIC_ROUTES, Route, peek_resource_id
from services.common.config import StackConfig
from services.common.errors import Unavailable, to_grpc_status
from services.common.mesh import make_channel, MeshClient
from services.common.registry_cache import RegistryCache
from services.common.server import SERVED_BY_KEY

__all__ = ["Forwarder"]

log = logging.getLogger("stackmesh.gateway")
# Hop-by-hop and transport headers that must not be copied to the next hop.
_DROP_METADATA = {"content-type", "user-agent", "te", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout"}


def _forward_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ())
                 if k not in _DROP_METADATA and not k.startswith(":"))


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


def _backend_trailers(metadata: Any) -> tuple[tuple[str, Any], ...]:
    """What a backend's trailers carry for the caller: rich error details and which replica answered."""
    return tuple((k, v) for k, v in (metadata or ()) if k in ("grpc-status-details-bin", SERVED_BY_KEY))


async def _abort_from(context: grpc.aio.ServicerContext, err: grpc.aio.AioRpcError) -> None:
    await context.abort(err.code(), err.details() or "", _backend_trailers(err.trailing_metadata()))


async def _abort_stream_cut(context: grpc.aio.ServicerContext, backend: str, served_by: str, relayed: int,
                            err: grpc.aio.AioRpcError) -> None:
    error = Unavailable(
        f"the stream was cut after {relayed} messages: the {backend} replica serving it "
        f"({served_by or 'unknown'}) went away ({err.details()}); the request can be sent again",
        reason="STREAM_INTERRUPTED", metadata={"served_by": served_by, "messages_relayed": relayed})
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


class Forwarder(grpc.GenericRpcHandler):
    def __init__(self, config: StackConfig, mesh: MeshClient, cache: RegistryCache) -> None:
        self.config = config
        self.mesh = mesh
        self.cache = cache
        self._provider_channels = {pid: make_channel(t.target) for pid, t in config.mesh.provider_services.items()}
        # Provider ids are unique per API only: route to a provider's deployment only for its own API.
        self._providers_of = {api: {p.provider_id for p in entries} for api, entries in config.providers.items()}
        self._handlers = {path: self._handler(path, route) for path, route in PUBLIC_ROUTES.items()}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    async def close(self) -> None:
        for channel in self._provider_channels.values():
            await channel.close()

    def _channel(self, route: Route, request: bytes) -> grpc.aio.Channel:
        if route.resource_type and self._provider_channels:
            mine = self._providers_of.get(route.backend, set())
            identifier = peek_resource_id(request)
            resource = self.cache.index.get(route.resource_type, identifier) if identifier else None
            if resource is not None and resource.provider_id in self._provider_channels and resource.provider_id in mine:
                return self._provider_channels[resource.provider_id]
            prefix = identifier.partition("/")[0]
            if prefix in self._provider_channels and prefix in mine:
                return self._provider_channels[prefix]
        return self.mesh.channel(route.backend)

    def _handler(self, path: str, route: Route) -> grpc.RpcMethodHandler:
        if route.client_streaming:
            raise ValueError(f"{path}: client streaming is not forwarded")  # no public API uses it
        if route.server_streaming:
            async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
                call = self._channel(route, request).unary_stream(path)(
                    request, timeout=_timeout(context), metadata=_forward_metadata(context))
                relayed, served_by = 0, ""
                try:
                    headers = await call.initial_metadata()
                    served_by = dict(headers or ()).get(SERVED_BY_KEY, "")
                    if served_by:
                        await context.send_initial_metadata(((SERVED_BY_KEY, served_by),))
                    async for message in call:
                        relayed += 1
                        yield message
                    context.set_trailing_metadata(_backend_trailers(await call.trailing_metadata()))
                except grpc.aio.AioRpcError as err:
                    if err.code() == grpc.StatusCode.UNAVAILABLE and relayed:
                        # Mid-stream: not retried (the caller has part of the answer), but said plainly.
                        await _abort_stream_cut(context, route.backend, served_by, relayed, err)
                    await _abort_from(context, err)
                finally:
                    call.cancel()  # the caller left: stop the backend too

            return grpc.unary_stream_rpc_method_handler(stream)

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            call = self._channel(route, request).unary_unary(path)(
                request, timeout=_timeout(context), metadata=_forward_metadata(context))
            try:
                response = await call
            except grpc.aio.AioRpcError as err:
                await _abort_from(context, err)
            context.set_trailing_metadata(_backend_trailers(await call.trailing_metadata()))
            return response

        return grpc.unary_unary_rpc_method_handler(unary)
