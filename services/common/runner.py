"""Run one stackmesh process (``stackmesh serve <name>`` / ``python -m services.<name>``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from services.common import catalog
from services.common.config import StackConfig, load_config
from services.common.errors import StackmeshError
from services.common.logs import configure_logging
from services.common.server import ServiceHost

__all__ = ["run_service", "SERVICE_BUILDERS", "serve"]

# process name -> async builder(config, host) that adds servicers and background tasks.
SERVICE_BUILDERS: dict[str, str] = {
    "registry": "services.registry.app:build_registry",
    "inference": "services.inference.app:build_inference",
    "safety": "services.safety.app:build_safety",
    "vector_io": "services.vector_io.app:build_vector_io",
    "datasetio": "services.datasetio.app:build_datasetio",
    "scoring": "services.scoring.app:build_scoring",
    "eval": "services.eval.app:build_eval",
    "post_training": "services.post_training.app:build_post_training",
    "tool_runtime": "services.tool_runtime.app:build_tool_runtime",
    "gateway": "gateway.app:build_gateway",
}

log = logging.getLogger("stackmesh.runner")


async def serve(name: str, config: StackConfig, host: str | None = None, port: int | None = None) -> None:
    if name == "gateway":
        bind_port = config.server.port if port is None else port
        bind_host = host or config.server.host or config.mesh.host
    else:
        bind_port = config.mesh.port_of(name) if port is None else port
        bind_host = host or config.mesh.host
    server = ServiceHost(name, bind_host, bind_port)
    builder = catalog.import_object(SERVICE_BUILDERS[name])
    await builder(config, server)
    await server.start()
    await server.set_serving(True)
    await server.wait()


def run_service(name: str, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"stackmesh serve {name}")
    parser.add_argument("--config", default=None, help="run config (default: $STACKMESH_CONFIG or deploy/run.yaml)")
    parser.add_argument("--host", default=None, help="address to bind (default: mesh.host)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (0 = any free port)")
    args = parser.parse_args(argv)
    configure_logging(name)
    if name not in SERVICE_BUILDERS:
        sys.exit(f"stackmesh serve: unknown service '{name}'; one of {', '.join(SERVICE_BUILDERS)}")
    try:
        config = load_config(args.config)
    except StackmeshError as err:
        sys.exit(f"stackmesh serve {name}: {err.message}")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        asyncio.run(serve(name, config, args.host, args.port))
    except StackmeshError as err:
        log.error("cannot start: %s", err.message)
        sys.exit(2)
