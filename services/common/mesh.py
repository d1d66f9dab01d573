"""The mesh client: one gRPC channel per peer service, shared by everything in a process.

Each channel balances round robin over every address of its target (a comma list of replicas, or
``dns:///name:port`` re-resolved by gRPC when connections fail, which is what compose ``--scale``
and Kubernetes headless Services need), and retries calls on UNAVAILABLE — except the few
that are not idempotent: Unregister* (a retry could turn into a spurious NOT_FOUND), InvokeTool
(a tool may have side effects), AppendRows, RunEval and SupervisedFineTune (a retry could append twice /
start two jobs), DeleteJobArtifacts.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable, TypeVar

import grpc

from services.common.config import MeshConfig
from services.common.server import SERVER_OPTIONS

__all__ = ["MeshClient", "channel_target", "make_channel", "call_with_grace", "NON_IDEMPOTENT_METHODS"]

T = TypeVar("T")

NON_IDEMPOTENT_METHODS: list[tuple[str, str]] = [
    (f"stackmesh.registry.v1.{plural}Service", f"Unregister{name}")
    for name, plural in [("Model", "Models"), ("Shield", "Shields"), ("VectorDB", "VectorDBs"),
                         ("Dataset", "Datasets"), ("ScoringFunction", "ScoringFunctions"),
                         ("Benchmark", "Benchmarks"), ("ToolGroup", "ToolGroups")]
] + [
    # A tool may have side effects: calling it twice is not the caller's intent.
    ("stackmesh.tool_runtime.v1.ToolRuntimeService", "InvokeTool"),
    # A retried append could add the rows twice; a retried RunEval could start two jobs.
    ("stackmesh.datasetio.v1.DatasetIOService", "AppendRows"),
    ("stackmesh.eval.v1.EvalService", "RunEval"),
    ("stackmesh.post_training.v1.PostTrainingService", "SupervisedFineTune"),
    ("stackmesh.post_training.v1.PostTrainingService", "DeleteJobArtifacts"),
]

_SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{}],  # every method ...
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        },
        # ... but these: no retry.
        {"name": [{"service": s, "method": m} for s, m in NON_IDEMPOTENT_METHODS]},
    ],
})


async def call_with_grace(make: Callable[[], Awaitable[T]], grace_seconds: float) -> T:
    """Call ``make()`` (an idempotent RPC), retrying UNAVAILABLE for ``grace_seconds`` beyond the
    channel's own few quick retries: long jobs ride out a rolling restart of a peer this way; a
    peer that stays down raises its last ``AioRpcError`` once the grace is spent."""
    give_up = time.monotonic() + grace_seconds
    backoff = 0.2
    while True:
        try:
            return await make()
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + backoff >= give_up:
                raise
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def channel_target(target: str) -> str:
    """gRPC target for a config value: 'h:p', 'h1:p1,h2:p2' (replicas), or any gRPC URI."""
    if "," in target and "://" not in target and not target.startswith(("ipv4:", "ipv6:")):
        return "ipv4:" + target
    return target


def make_channel(target: str, extra_options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    shared = ("grpc.max_receive_message_length", "grpc.max_send_message_length", "grpc.keepalive_time_ms",
              "grpc.keepalive_timeout_ms", "grpc.keepalive_permit_without_calls")
    options = [o for o in SERVER_OPTIONS if o[0] in shared]
    options += [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1),
                ("grpc.dns_min_time_between_resolutions_ms", 1000),
                # A peer that restarts is reached again within ~2 s (gRPC's default backoff grows to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000), *(extra_options or [])]
    return grpc.aio.insecure_channel(channel_target(target), options=options)


class MeshClient:
    """Channels to the registry and the API services, by name, created on first use."""

    def __init__(self, mesh: MeshConfig) -> None:
        self.mesh = mesh
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, name: str) -> grpc.aio.Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = make_channel(self.mesh.target_of(name))
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
