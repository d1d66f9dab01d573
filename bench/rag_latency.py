"""RAG query latency end to end: KnowledgeSearch (embedding + search + prompt formatting) through the
gateway, against the same question asked lower down the mesh.

Starts a real mesh (registry, inference with inline::sentence-transformers all-MiniLM-L6-v2,
vector_io with inline::sqlite-vec, tool_runtime with inline::rag-runtime, gateway; processes on
127.0.0.1), inserts a synthetic handbook through InsertDocuments, and measures, interleaved in
rounds, the same questions on four paths:

  rag-gateway     client -> gateway -> tool_runtime -> vector_io -> inference   (what a user calls)
  rag-direct      client -> tool_runtime -> vector_io -> inference              (no gateway hop)
  query-direct    client -> vector_io QueryChunks -> inference                  (no RAG runtime)
  embed-direct    client -> inference Embeddings of the question                (the embedding alone)

each one call at a time and with --concurrency calls in flight. Prints p50, p99 and requests/s per
path and the ratios measured within the same rounds.

    .venv/bin/python bench/rag_latency.py            # ~1-2 min
    .venv/bin/python bench/rag_latency.py --quick    # ~30 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import pathlib
import sys
import tempfile
import time

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402

from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc  # noqa: E402
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc  # noqa: E402
from stackmesh.tool_runtime.v1 import tool_runtime_pb2 as tpb, tool_runtime_pb2_grpc  # noqa: E402
from stackmesh.vector_io.v1 import vector_io_pb2 as vpb, vector_io_pb2_grpc  # noqa: E402
from tests.support.mesh import LocalMesh  # noqa: E402

EMBED_MODEL = "all-MiniLM-L6-v2"
VECTOR_DB = "handbook"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
PATHS = ["rag-gateway", "rag-direct", "query-direct", "embed-direct"]
TOPICS = ["vacation days", "parental leave", "expense reports", "password resets", "parking permits",
          "remote work", "laptop orders", "health insurance", "travel booking", "fire drills", "badge access",
          "the cafeteria", "bike storage", "training budgets", "performance reviews", "overtime pay"]
QUESTIONS = [f"What is the policy on {topic}?" for topic in TOPICS]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~30 s smoke run (fewer rounds, calls and documents)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    p.add_argument("--documents", type=int, help="documents inserted (default 400, quick 64)")
    p.add_argument("--seq", type=int, help="sequential calls per path per round (default 40, quick 10)")
    p.add_argument("--conc", type=int, help="concurrent calls per path per round (default 120, quick 30)")
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight in the concurrent mode")
    p.add_argument("--max-chunks", type=int, default=5, help="chunks asked of each search")
    args = p.parse_args(argv)
    for name, (quick, full) in dict(rounds=(2, 5), documents=(64, 400), seq=(10, 40), conc=(30, 120)).items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def document(i: int) -> tpb.RAGDocument:
    topic = TOPICS[i % len(TOPICS)]
    text = (f"Section {i}: {topic}. The rule for {topic} in office {i % 7} is reviewed every {1 + i % 4} years. "
            f"Questions about {topic} go to team {i % 11}. Exceptions need written approval from a director, "
            f"and records are kept for {3 + i % 5} years. This paragraph is number {i} of the handbook.")
    return tpb.RAGDocument(document_id=f"section-{i}", content=text)


async def prepare(args: argparse.Namespace, gw: grpc.aio.Channel) -> None:
    models = registry_pb2_grpc.ModelsServiceStub(gw)
    deadline = time.monotonic() + 120
    while True:  # discovery of the inline model is asynchronous
        try:
            await models.GetModel(rpb.GetModelRequest(model_id=f"sentence-transformers/{EMBED_MODEL}"), timeout=5)
            break
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    await registry_pb2_grpc.VectorDBsServiceStub(gw).RegisterVectorDB(
        rpb.RegisterVectorDBRequest(vector_db_id=VECTOR_DB, embedding_model=EMBED_MODEL), timeout=30)
    rag = tool_runtime_pb2_grpc.ToolRuntimeServiceStub(gw)
    started, chunks = time.perf_counter(), 0
    for start in range(0, args.documents, 64):
        reply = await rag.InsertDocuments(tpb.InsertDocumentsRequest(
            vector_db_id=VECTOR_DB, documents=[document(i) for i in range(start, min(start + 64, args.documents))],
            chunk_size_in_tokens=48, chunk_overlap_in_tokens=8), timeout=600)
        chunks += reply.chunks
    B.progress(f"inserted {args.documents} documents as {chunks} chunks in {time.perf_counter() - started:.1f} s")


async def bench(args: argparse.Namespace, mesh: LocalMesh) -> int:
    channels = {
        "gateway": grpc.aio.insecure_channel(mesh.url, options=CHANNEL_OPTIONS),
        "tool_runtime": grpc.aio.insecure_channel(mesh.services["tool_runtime"].address, options=CHANNEL_OPTIONS),
        "vector_io": grpc.aio.insecure_channel(mesh.services["vector_io"].address, options=CHANNEL_OPTIONS),
        "inference": grpc.aio.insecure_channel(mesh.inference[0].address, options=CHANNEL_OPTIONS),
    }
    try:
        await prepare(args, channels["gateway"])
        questions = itertools.cycle(QUESTIONS)

        def knowledge_search(channel: grpc.aio.Channel) -> B.Call:
            stub = tool_runtime_pb2_grpc.ToolRuntimeServiceStub(channel)
            return lambda: stub.KnowledgeSearch(tpb.KnowledgeSearchRequest(
                query=next(questions), vector_db_ids=[VECTOR_DB], max_chunks=args.max_chunks), timeout=60)

        query_stub = vector_io_pb2_grpc.VectorIOServiceStub(channels["vector_io"])
        embed_stub = inference_pb2_grpc.InferenceServiceStub(channels["inference"])
        calls: dict[str, B.Call] = {
            "rag-gateway": knowledge_search(channels["gateway"]),
            "rag-direct": knowledge_search(channels["tool_runtime"]),
            "query-direct": lambda: query_stub.QueryChunks(vpb.QueryChunksRequest(
                vector_db_id=VECTOR_DB, query=next(questions), max_chunks=args.max_chunks), timeout=60),
            "embed-direct": lambda: embed_stub.Embeddings(ipb.EmbeddingsRequest(
                model=EMBED_MODEL, input=[next(questions)]), timeout=60),
        }
        reply = await calls["rag-gateway"]()
        if not reply.citations:
            raise RuntimeError("KnowledgeSearch found nothing; the corpus was not inserted")
        for path, call in calls.items():  # warm every channel and code path
            warm = await B.concurrent(call, 3 * args.concurrency, args.concurrency)
            if warm.errors:
                raise RuntimeError(f"warm-up {path}: {warm.first_error}")

        results = B.Results()
        modes = [("seq", None), (f"c{args.concurrency}", args.concurrency)]
        for r in range(args.rounds):
            B.progress(f"round {r + 1}/{args.rounds}")
            for mode, in_flight in modes:
                for path in B.rotated(PATHS, r):
                    batch = (await B.sequential(calls[path], args.seq) if in_flight is None
                             else await B.concurrent(calls[path], args.conc, in_flight))
                    results.add(mode, path, batch)

        rows, ratio_rows = [], []
        for mode, _ in modes:
            for path in PATHS:
                s = results.summary(mode, path)
                rows.append([mode, path, int(s["calls"]), s["p50_ms"], s["p99_ms"], s["rps"]])
            for num, den, meaning in [("rag-gateway", "query-direct", "user's RAG call vs vector_io QueryChunks"),
                                      ("rag-gateway", "rag-direct", "the gateway hop"),
                                      ("rag-direct", "query-direct", "the tool_runtime hop + formatting"),
                                      ("query-direct", "embed-direct", "vector_io hop + search over embedding")]:
                ratio_rows.append([mode, f"{num} / {den}", results.ratio(mode, num, den, "p50"),
                                   results.diff_ms(mode, num, den), meaning])
        print()
        print(B.table(["mode", "path", "calls", "p50 ms", "p99 ms", "req/s"], rows))
        print()
        print("RATIOS (median over rounds of same-round ratios; p50 latency)")
        print(B.table(["mode", "ratio", "p50 ratio", "added p50 ms", "what the difference is"], ratio_rows))
        errors = results.errors()
        for line in errors:
            print(f"ERROR {line}")
        return 1 if errors else 0
    finally:
        for channel in channels.values():
            await channel.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    B.header("rag_latency: KnowledgeSearch through the gateway vs lower down the mesh",
             rounds=args.rounds, documents=args.documents, concurrency=args.concurrency,
             max_chunks=args.max_chunks, quick=args.quick)
    started = time.monotonic()
    providers = {
        "inference": [{"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"}],
        "vector_io": [{"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec"}],
        "tool_runtime": [{"provider_id": "rag-runtime", "provider_type": "inline::rag-runtime"}],
    }
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
        directory = pathlib.Path(tmp)
        providers["vector_io"][0]["config"] = {"db_path": str(directory / "sqlite_vec.db")}
        mesh = LocalMesh(directory, providers=providers)
        try:
            B.progress("starting registry, inference, vector_io, tool_runtime and gateway processes ...")
            mesh.start()
            rc = B.run(lambda: bench(args, mesh))
        except Exception as err:  # noqa: BLE001 - report with the services' logs
            B.report_mesh_failure(err, mesh)
            rc = 1
        finally:
            mesh.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
