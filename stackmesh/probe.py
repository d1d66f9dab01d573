"""A tiny ``grpc.health.v1`` probe for container health checks.

    python -m stackmesh.probe HOST:PORT [--service NAME] [--timeout SECONDS]

Exits 0 only when the server answers SERVING for ``NAME`` (default ``""``: the whole process).
Any other answer (NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN) exits 1; a server that cannot be reached or
does not answer in time exits 2. One line on stderr says why when it is not 0. The address may be
left out when ``$STACKMESH_PROBE_TARGET`` is set (the image's default HEALTHCHECK uses that).

It imports nothing of stackmesh beyond this module, so a probe costs a Python start and one RPC
(about 0.2 s), which matters when docker runs it every few seconds in every container.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["check", "main", "EXIT_SERVING", "EXIT_NOT_SERVING", "EXIT_UNREACHABLE"]

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_UNREACHABLE = 2


def check(target: str, service: str = "", timeout: float = 3.0) -> tuple[int, str]:
    """Ask ``target`` for the health of ``service``; return (exit code, status or reason)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:  # the server does not know this service name
                return EXIT_NOT_SERVING, f"SERVICE_UNKNOWN ({err.details()})"
            name = code.name if code is not None else type(err).__name__
            details = err.details() if hasattr(err, "details") else str(err)
            return EXIT_UNREACHABLE, f"{name}: {details}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return (EXIT_SERVING if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_NOT_SERVING), status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stackmesh.probe",
                                     description="gRPC health check: exit 0 only when SERVING.")
    parser.add_argument("target", nargs="?", default=os.environ.get("STACKMESH_PROBE_TARGET"),
                        help="HOST:PORT (default: $STACKMESH_PROBE_TARGET)")
    parser.add_argument("--service", default="", help="health service name (default: the whole process)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when SERVING")
    args = parser.parse_args(argv)
    if not args.target:
        parser.error("give HOST:PORT or set $STACKMESH_PROBE_TARGET")
    code, status = check(args.target, args.service, args.timeout)
    what = f"{args.target}" + (f" service={args.service!r}" if args.service else "")
    if code == EXIT_SERVING:
        if not args.quiet:
            print(f"{what}: {status}")
    else:
        print(f"{what}: {status}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
