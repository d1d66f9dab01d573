"""The one server bootstrap every stackmesh process uses.

``ServiceHost`` builds a ``grpc.aio`` server with the error interceptor, ``grpc.health.v1``,
server reflection and sane channel options; binds; prints one ``READY`` line; and on SIGTERM/SIGINT
turns health to NOT_SERVING, drains in-flight calls for a grace period and runs the shutdown hooks.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import uuid
from typing import Any, Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.errors import StackmeshError, to_grpc_status

__all__ = ["ErrorInterceptor", "ServiceHost", "SERVER_OPTIONS", "SERVED_BY_KEY", "abort_with"]

log = logging.getLogger("stackmesh.server")

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Recycle client connections so round-robin clients re-resolve DNS and reach replicas added
    # later (compose --scale, Kubernetes headless Services); calls in flight finish first.
    ("grpc.max_connection_age_ms", 30_000),
]


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    """End the call with the right status for ``error`` (raises AbortError)."""
    if isinstance(error, StackmeshError):
        status = to_grpc_status(error)
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(error, grpc.aio.AioRpcError):  # a downstream service's status passes through unchanged
        trailing = tuple((k, v) for k, v in (error.trailing_metadata() or ()) if k == "grpc-status-details-bin")
        await context.abort(error.code(), error.details() or "", trailing)
    # The details stay in this service's log: an exception text may carry a URL with a key in it.
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error incident=%s", incident, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL,
                        f"internal error ({type(error).__name__}); incident {incident} in the service's log")


SERVED_BY_KEY = "stackmesh-served-by"


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], served_by: str | None) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if served_by:
                context.set_trailing_metadata(((SERVED_BY_KEY, served_by),))
            return await behavior(request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:  # noqa: BLE001 - every error is mapped to a status here, once
            await abort_with(context, err)

    return wrapper


def _wrap_stream(behavior: Callable[..., Any], served_by: str | None) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if served_by:
                # Streams say who serves them up front, so a caller knows which replica a cut stream was on.
                await context.send_initial_metadata(((SERVED_BY_KEY, served_by),))
                context.set_trailing_metadata(((SERVED_BY_KEY, served_by),))
            async for item in behavior(request, context):
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:  # noqa: BLE001
            await abort_with(context, err)

    return wrapper


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps the stackmesh error hierarchy (and stray exceptions) to gRPC statuses, and tags every
    answer with a ``stackmesh-served-by: <process>@<address>`` trailer (which replica answered)."""

    def __init__(self) -> None:
        self.served_by: str | None = None

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, self.served_by), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, self.served_by), handler.request_deserializer, handler.response_serializer)
        return handler


class ServiceHost:
    """One gRPC server process: servicers + health + reflection + graceful shutdown."""

    def __init__(self, name: str, host: str, port: int, *, grace_seconds: float = 5.0,
                 generic_handlers: Iterable[grpc.GenericRpcHandler] = (), interceptors: Iterable[Any] = ()) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.grace_seconds = grace_seconds
        self._errors = ErrorInterceptor()
        self.server = grpc.aio.server(interceptors=[self._errors, *interceptors], options=SERVER_OPTIONS)
        if generic_handlers:
            self.server.add_generic_rpc_handlers(tuple(generic_handlers))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = []
        # Services reflected but not registered here (the gateway's forwarded ones).
        self.extra_reflection_names: list[str] = []
        # Tag answers with stackmesh-served-by; a proxy (the gateway) relays its backend's tag instead.
        self.tag_replies = True
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._stopping = asyncio.Event()

    def add(self, add_to_server: Callable[[Any, Any], None], servicer: Any, service_name: str) -> None:
        add_to_server(servicer, self.server)
        self.service_names.append(service_name)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_stop.append(hook)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def start(self, install_signal_handlers: bool = True) -> int:
        names = [*self.service_names, *self.extra_reflection_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        self.port = self.server.add_insecure_port(f"{self.host}:{self.port}")
        if self.port == 0:
            raise OSError(f"{self.name}: cannot bind {self.host}")
        # Bound to every interface (containers): name the replica by its host name, which differs per replica.
        shown = socket.gethostname() if self.host in ("0.0.0.0", "::", "[::]", "") else self.host
        self._errors.served_by = f"{self.name}@{shown}:{self.port}" if self.tag_replies else None
        await self.server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ():
            loop.add_signal_handler(sig, self._stopping.set)
        log.info("listening name=%s address=%s:%d", self.name, self.host, self.port)
        # One machine-readable line the launcher and tests wait for.
        print(f"READY {self.name} {self.host}:{self.port}", flush=True)
        return self.port

    async def stop(self) -> None:
        self._stopping.set()
        await self.set_serving(False)
        await self.server.stop(self.grace_seconds)
        for hook in reversed(self._on_stop):
            try:
                await hook()
            except Exception:  # noqa: BLE001 - shutdown continues whatever one hook does
                log.exception("shutdown hook failed")
        log.info("stopped name=%s", self.name)

    async def wait(self) -> None:
        """Serve until SIGTERM/SIGINT, then shut down gracefully."""
        await self._stopping.wait()
        await self.stop()
