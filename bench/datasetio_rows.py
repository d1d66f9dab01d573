"""datasetio read throughput: a JSONL dataset's rows through IterRows vs reading the file with pandas.

Writes a JSONL file of --rows eval rows (id, input_query, expected_answer, a score and a short list
of tags; ~150 bytes each), starts a real mesh (registry + inference with no providers + datasetio
with inline::localfs + gateway; tests/support) and registers the file as a dataset. Then measures,
interleaved in rounds, one full pass over every row, each ending with the rows as Python dicts:

  pandas        pandas.read_json(lines=True) + DataFrame.to_dict("records"): reading the file by hand;
  direct        IterRows pages of --page rows straight to the datasetio service (grpc.aio), each
                page's Structs turned into dicts (json_format.MessageToDict, what a client does);
  gateway       the same through the gateway: the product;
  gateway cold  the same after touching the file (new mtime): the service reads the file again on
                the pass's first page, as after the dataset's file changes;
  gateway, replies only   the gateway pass without the client's Struct -> dict conversion: what the
                mesh itself delivers (rows as protobuf messages).

rows/s = rows / pass time; p50 = median pass time. Ratios are medians over rounds of same-round
ratios (bench/_benchlib.py rules). The last lines split a gateway pass into the mesh's part (replies
received) and the client's conversion of Structs to dicts.

    .venv/bin/python bench/datasetio_rows.py            # ~1 min on 2 cores
    .venv/bin/python bench/datasetio_rows.py --quick    # ~25 s
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Any

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402
import pandas as pd  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from stackmesh.datasetio.v1 import datasetio_pb2 as dpb, datasetio_pb2_grpc  # noqa: E402
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc  # noqa: E402
from tests.support.mesh import LocalMesh  # noqa: E402

DATASET = "bench-qa"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
PROVIDERS = {"inference": [],
             "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]}
VARIANTS = ["pandas", "direct", "gateway", "gateway cold", "gateway, replies only"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds and passes (same rows)")
    p.add_argument("--rows", type=int, default=10_000, help="rows in the dataset (default 10,000)")
    p.add_argument("--page", type=int, default=1000, help="rows per IterRows call (default 1000)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    p.add_argument("--passes", type=int, help="full passes per variant per round (default 5, quick 2)")
    args = p.parse_args(argv)
    for name, quick, full in (("rounds", 2, 5), ("passes", 2, 5)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def write_dataset(path: pathlib.Path, n: int) -> None:
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"id": i, "input_query": f"What is {i} plus {i * 7 % 13}? Answer with a number.",
                                  "expected_answer": str(i + i * 7 % 13), "score": (i % 100) / 100,
                                  "tags": ["arithmetic", f"bucket-{i % 10}"]}) + "\n")


def read_with_pandas(path: pathlib.Path) -> list[dict[str, Any]]:
    return pd.read_json(path, lines=True).to_dict("records")


async def read_pages(stub: Any, page: int, to_dicts: bool) -> int:
    rows, start = 0, 0
    while True:
        reply = await stub.IterRows(dpb.IterRowsRequest(dataset_id=DATASET, start_index=start, limit=page), timeout=60)
        if to_dicts:
            [json_format.MessageToDict(r) for r in reply.rows]
        rows += len(reply.rows)
        if not reply.has_more:
            return rows
        start = reply.next_index


async def bench(args: argparse.Namespace, mesh: LocalMesh, path: pathlib.Path) -> int:
    gateway = grpc.aio.insecure_channel(mesh.url, options=CHANNEL_OPTIONS)
    direct = grpc.aio.insecure_channel(mesh.services["datasetio"].address, options=CHANNEL_OPTIONS)
    try:
        await registry_pb2_grpc.DatasetsServiceStub(gateway).RegisterDataset(rpb.RegisterDatasetRequest(
            dataset_id=DATASET, purpose="eval/question-answer", uri=f"file://{path}"), timeout=30)
        via_gateway = datasetio_pb2_grpc.DatasetIOServiceStub(gateway)
        via_direct = datasetio_pb2_grpc.DatasetIOServiceStub(direct)
        assert len(read_with_pandas(path)) == args.rows
        for stub in (via_gateway, via_direct):  # warm: the file is loaded, connections are up
            assert await read_pages(stub, args.page, True) == args.rows

        def touch() -> None:
            stat = os.stat(path)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

        async def pandas_pass() -> None:
            read_with_pandas(path)

        async def cold_pass() -> None:
            touch()
            await read_pages(via_gateway, args.page, True)

        calls = {"pandas": pandas_pass,
                 "direct": lambda: read_pages(via_direct, args.page, True),
                 "gateway": lambda: read_pages(via_gateway, args.page, True),
                 "gateway cold": cold_pass,
                 "gateway, replies only": lambda: read_pages(via_gateway, args.page, False)}
        assert list(calls) == VARIANTS
        results = B.Results()
        for r in range(args.rounds):
            B.progress(f"round {r + 1}/{args.rounds}")
            for label in B.rotated(list(calls), r):
                results.add("pass", label, await B.sequential(calls[label], args.passes))
        report(args, results)
        errors = results.errors()
        for line in errors:
            print(f"ERROR {line}")
        return 1 if errors else 0
    finally:
        await gateway.close()
        await direct.close()


def report(args: argparse.Namespace, results: B.Results) -> None:
    print(f"\nREAD every row of a {args.rows:,}-row JSONL dataset into Python dicts (all but the last path), IterRows "
          f"pages of {args.page:,} (median over {args.rounds} rounds of {args.passes} passes)")
    rows = []
    for label in VARIANTS:
        s = results.summary("pass", label)
        if not s["calls"]:
            continue
        rows.append([label, s["p50_ms"], s["rps"] * args.rows, results.ratio("pass", label, "pandas", "rps"),
                     results.ratio("pass", label, "direct", "rps")])
    print(B.table(["path", "p50 ms/pass", "rows/s", "rows/s vs pandas", "rows/s vs direct"], rows))

    full = results.summary("pass", "gateway")["p50_ms"]
    wire = results.summary("pass", "gateway, replies only")["p50_ms"]
    print(f"\nA gateway pass, split (p50 ms): {full:.1f} in all = {wire:.1f} until every reply is received "
          f"({args.rows // args.page} IterRows calls) + {full - wire:.1f} turning Structs into dicts in the client")
    print(f"gateway / direct rows/s: {results.ratio('pass', 'gateway', 'direct', 'rps'):.2f}   "
          f"gateway / pandas rows/s: {results.ratio('pass', 'gateway', 'pandas', 'rps'):.2f}   "
          f"cold / warm gateway rows/s: {results.ratio('pass', 'gateway cold', 'gateway', 'rps'):.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    B.header("datasetio_rows: IterRows through the gateway vs the datasetio service directly vs pandas on the file",
             rows=args.rows, page=args.page, rounds=args.rounds, passes=args.passes, quick=args.quick)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-dsio-") as tmp:
        folder = pathlib.Path(tmp)
        path = folder / "qa.jsonl"
        write_dataset(path, args.rows)
        (folder / "mesh").mkdir()
        mesh = LocalMesh(folder / "mesh", providers=PROVIDERS)
        try:
            B.progress("starting registry, inference (no providers), datasetio and gateway processes ...")
            mesh.start()
            rc = B.run(lambda: bench(args, mesh, path))
        except Exception as err:  # noqa: BLE001 - report with the services' logs
            B.report_mesh_failure(err, mesh)
            rc = 1
        finally:
            mesh.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
