"""The physical limit of Python gRPC on this machine, and how close the mesh gets to it.

Four paths, all on 127.0.0.1, every server in its own process, measured interleaved in rounds:

  echo 1-hop   client -> echo server                     (grpc.aio generic handler, raw bytes)
  echo 2-hop   client -> bare proxy -> echo server       (the proxy forwards raw bytes, nothing else)
  mesh 1-hop   client -> registry         ModelsService/GetModel
  mesh 2-hop   client -> gateway -> registry   (the same GetModel through the mesh's front door)

The echo request is the exact bytes of the GetModelRequest and its reply has the size of the
GetModelResponse, so the echo paths move the same bytes as the mesh paths; what remains is the
mesh's own work (parsing, the error interceptor, the registry lookup, the gateway's routing,
metadata and deadline forwarding). Each path runs sequentially and with 50 calls in flight.

    .venv/bin/python bench/echo_ceiling.py            # ~1 min
    .venv/bin/python bench/echo_ceiling.py --quick    # ~20 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402

ECHO_METHOD = "/bench.Echo/Call"


# ----------------------------------------------------------------------------- child processes
def serve_child(role: str, port: int, reply_size: int, target: str) -> None:
    """Run one bare server (role echo or proxy) until SIGTERM; prints 'READY <port>' when bound."""

    async def main() -> int:
        reply = b"x" * reply_size  # raw bytes of the mesh reply's size, sent as they are
        server = grpc.aio.server()
        channel = grpc.aio.insecure_channel(target) if role == "proxy" else None

        if role == "echo":
            async def behavior(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return reply
        else:
            forward = channel.unary_unary(ECHO_METHOD)  # no serializers: bytes in, bytes out

            async def behavior(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return await forward(request)

        handler = grpc.unary_unary_rpc_method_handler(behavior)  # identity (de)serializers

        class Generic(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                return handler if details.method == ECHO_METHOD else None

        server.add_generic_rpc_handlers((Generic(),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"READY {bound}", flush=True)
        stop = asyncio.Event()
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(0.5)
        if channel is not None:
            await channel.close()
        return 0

    B.run(main)


class Child:
    def __init__(self, role: str, reply_size: int = 0, target: str = "") -> None:
        self.role = role
        cmd = [sys.executable, __file__, "--serve", role, "--port", "0", "--reply-size", str(reply_size),
               "--target", target]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        text = line[0].decode().strip() if line else ""
        if not text.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{role} server did not start: {text!r} {self.process.stderr.read().decode()[-2000:]}")
        self.address = f"127.0.0.1:{int(text.split()[1])}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ----------------------------------------------------------------------------- benchmark
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~20 s smoke run")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 10, quick 3)")
    p.add_argument("--seq", type=int, help="sequential calls per path per round (default 400, quick 150)")
    p.add_argument("--conc-total", type=int, help="concurrent calls per path per round (default 2500, quick 600)")
    p.add_argument("--concurrency", type=int, default=50, help="calls in flight in the concurrent mode")
    p.add_argument("--serve", choices=["echo", "proxy"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--reply-size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--target", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, (q, full) in dict(rounds=(3, 10), seq=(150, 400), conc_total=(600, 2500)).items():
        if getattr(args, name) is None:
            setattr(args, name, q if args.quick else full)
    return args


async def bench(args: argparse.Namespace, registry_addr: str, gateway_addr: str, model_id: str,
                start_echo) -> int:
    from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc

    channels: list[grpc.aio.Channel] = []

    def channel(address: str) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(address)
        channels.append(ch)
        return ch

    try:
        get_req = rpb.GetModelRequest(model_id=model_id)
        reply = await registry_pb2_grpc.ModelsServiceStub(channel(registry_addr)).GetModel(get_req, timeout=10)
        request_bytes, reply_size = get_req.SerializeToString(), reply.ByteSize()
        echo, proxy = start_echo(reply_size)

        def mesh_call(address: str) -> B.Call:
            stub = registry_pb2_grpc.ModelsServiceStub(channel(address))
            return lambda: stub.GetModel(get_req, timeout=30)

        def echo_call(address: str) -> B.Call:
            method = channel(address).unary_unary(ECHO_METHOD)
            return lambda: method(request_bytes, timeout=30)

        paths = {"echo 1-hop": echo_call(echo), "echo 2-hop": echo_call(proxy),
                 "mesh 1-hop": mesh_call(registry_addr), "mesh 2-hop": mesh_call(gateway_addr)}
        for name, call in paths.items():  # connect and warm every path
            warm = await B.concurrent(call, 200, args.concurrency)
            if warm.errors:
                raise RuntimeError(f"warm-up {name}: {warm.first_error}")
        print(f"   payload: request {len(request_bytes)} B, reply {reply_size} B (echo replies are the same sizes)")

        results = B.Results()
        modes = [("seq", None), (f"c{args.concurrency}", args.concurrency)]
        for r in range(args.rounds):
            B.progress(f"round {r + 1}/{args.rounds}")
            for mode, in_flight in modes:
                for name in B.rotated(list(paths), r):
                    if in_flight is None:
                        batch = await B.sequential(paths[name], args.seq)
                    else:
                        batch = await B.concurrent(paths[name], args.conc_total, in_flight)
                    results.add(mode, name, batch)

        rows, ratio_rows = [], []
        for mode, _ in modes:
            for name in paths:
                s = results.summary(mode, name)
                rows.append([mode, name, int(s["calls"]), s["p50_ms"], s["p99_ms"], s["rps"]])
        for mode, _ in modes:
            for num, den in (("mesh 2-hop", "echo 2-hop"), ("mesh 1-hop", "echo 1-hop"),
                             ("echo 2-hop", "echo 1-hop"), ("mesh 2-hop", "mesh 1-hop")):
                ratio_rows.append([mode, f"{num} / {den}", results.ratio(mode, num, den, "p50"),
                                   results.ratio(mode, num, den, "rps"), results.diff_ms(mode, num, den)])
        print()
        print(B.table(["mode", "path", "calls", "p50 ms", "p99 ms", "req/s"], rows))
        print()
        print("RATIOS (median over rounds of same-round ratios). mesh 2-hop / echo 2-hop = how far the mesh is\n"
              "from the bare-gRPC ceiling; the last two rows compare what one extra hop costs bare vs in the mesh")
        print(B.table(["mode", "ratio", "p50", "req/s", "added p50 ms"], ratio_rows))
        errors = results.errors()
        for line in errors:
            print(f"ERROR {line}")
        return 1 if errors else 0
    finally:
        for ch in channels:
            await ch.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve_child(args.serve, args.port, args.reply_size, args.target)
        return 0

    from stackmesh.common.v1 import common_pb2
    from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc
    from google.protobuf import struct_pb2
    from tests.support.mesh import ServiceProcess, free_port, write_config

    B.header("echo_ceiling: bare Python gRPC echo (1 and 2 hops) vs the mesh's GetModel (1 and 2 hops)",
             rounds=args.rounds, seq=args.seq, concurrent=f"{args.conc_total} at {args.concurrency} in flight",
             quick=args.quick)
    started = time.monotonic()
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="bench-echo-") as tmp:
        directory = pathlib.Path(tmp)
        ports = {"registry": free_port(), "gateway": free_port()}
        providers = {"inference": [{"provider_id": "sentence-transformers",
                                    "provider_type": "inline::sentence-transformers", "config": {}}]}
        config = write_config(directory, providers=providers, ports=ports)
        # Two server processes, like the echo's proxy + server: registry and gateway (no inference needed).
        registry = ServiceProcess("registry", config, ports["registry"], directory)
        gateway = ServiceProcess("gateway", config, ports["gateway"], directory)
        model_id = "bench-echo-model"

        def start_echo(reply_size: int) -> tuple[str, str]:
            echo = Child("echo", reply_size=reply_size)
            children.append(echo)
            proxy = Child("proxy", target=echo.address)
            children.append(proxy)
            return echo.address, proxy.address

        rc = 1
        try:
            B.progress("starting registry, gateway, echo server and proxy processes ...")
            registry.start()
            gateway.start()
            with grpc.insecure_channel(registry.address) as ch:
                meta = struct_pb2.Struct()
                meta.update({"embedding_dimension": 384})
                registry_pb2_grpc.ModelsServiceStub(ch).RegisterModel(rpb.RegisterModelRequest(
                    model_id=model_id, provider_model_id="all-MiniLM-L6-v2",
                    model_type=common_pb2.MODEL_TYPE_EMBEDDING, metadata=meta), timeout=10)
            rc = B.run(lambda: bench(args, registry.address, gateway.address, model_id, start_echo))
        except Exception as err:  # noqa: BLE001
            print(f"FAILED: {type(err).__name__}: {err}")
            for process in (registry, gateway):
                if process.process is not None and process.process.poll() is not None:
                    print(f"-- {process.name} exited with {process.process.returncode}; log tail:\n{process.log_tail()}")
            rc = 1
        finally:
            for child in children:
                child.stop()
            gateway.stop()
            registry.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
