"""vector_io throughput: 10,000 384-dim chunks per provider, three ways, interleaved in rounds.

Starts a real Chroma server and a real mesh (registry + inference with all-MiniLM-L6-v2 + vector_io
with inline::sqlite-vec, inline::faiss and remote::chromadb + gateway; tests/support) and measures,
per provider, three paths to the same store:

  library   the provider's library called by hand in this process: sqlite-vec SQL on pysqlite3
            (chunks + vec0 + FTS5 tables), faiss.IndexFlatIP (+ a list of texts), chromadb.AsyncHttpClient;
  provider  stackmesh's provider class in this process, no gRPC: what the service adds inside;
  gateway   InsertChunks / QueryChunks through the gateway to the vector_io service: the product.

Workloads: insert every chunk (random unit vectors, precomputed; batches of --batch, one call at a
time) -> chunks/s; sequential vector queries (a precomputed query vector near a known chunk, k=5)
-> p50, queries/s and recall@1; sequential keyword queries (two words, k=5) where the library has
keyword search. Ratios are medians over rounds of same-round ratios (bench/_benchlib.py rules).
Then RAG-style latency through the gateway on those 10k-chunk vector DBs: QueryChunks with the
question's text (the service embeds it through inference, then searches) vs its two halves.

    .venv/bin/python bench/vector_io_throughput.py            # ~3-5 min on 2 cores
    .venv/bin/python bench/vector_io_throughput.py --quick    # ~2 min: 1 round, fewer queries
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import pathlib
import sys
import tempfile
import time
from typing import Any

import _benchlib as B  # noqa: E402  (puts the repository root on sys.path)

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from services.common.config import parse_config  # noqa: E402
from services.common.provider_host import build_providers  # noqa: E402
from services.vector_io.providers.base import ChunkRecord, VectorDBTarget  # noqa: E402
from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc  # noqa: E402
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc  # noqa: E402
from stackmesh.vector_io.v1 import vector_io_pb2 as vpb, vector_io_pb2_grpc  # noqa: E402
from tests.support.chroma_server import ChromaServer  # noqa: E402
from tests.support.mesh import LocalMesh  # noqa: E402

EMBED_MODEL = "all-MiniLM-L6-v2"
DIM = 384
PROVIDERS = {"sqlite-vec": "inline::sqlite-vec", "faiss": "inline::faiss", "chromadb": "remote::chromadb"}
QUESTIONS = ["How many vacation days do employees get?", "Where is the fire assembly point?",
             "How do I reset my password?", "Who issues parking permits?", "When does the cafeteria open?"]
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round, fewer queries (same 10,000 chunks)")
    p.add_argument("--chunks", type=int, default=10_000, help="chunks per vector DB (default 10,000)")
    p.add_argument("--batch", type=int, default=500, help="chunks per insert call (default 500)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    p.add_argument("--queries", type=int, help="sequential queries per variant, mode and round (default 200, quick 60)")
    p.add_argument("--rag", type=int, help="RAG calls per path, provider and round (default 40, quick 15)")
    args = p.parse_args(argv)
    for name, quick, full in (("rounds", 1, 3), ("queries", 60, 200), ("rag", 15, 40)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class Dataset:
    """Chunks of 12 pseudo-words with random unit vectors; queries near known chunks."""

    def __init__(self, n: int, batch: int, queries: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        vocab = [f"term{i}" for i in range(3000)]
        self.vectors = unit(rng.standard_normal((n, DIM)))
        self.texts = [" ".join(rng.choice(vocab, 12)) for _ in range(n)]
        self.ids = [f"c{i}" for i in range(n)]
        self.targets = rng.integers(n, size=queries)  # query i is near chunk targets[i]
        self.query_vectors = unit(self.vectors[self.targets] + 0.2 * unit(rng.standard_normal((queries, DIM))))
        self.keyword_queries = [" ".join(self.texts[t].split()[:2]) for t in self.targets]
        self.batches = [(a, min(a + batch, n)) for a in range(0, n, batch)]
        self.records = [ChunkRecord(c, "bench", i, t, {"document_id": "bench", "position": i, "chunk_id": c})
                        for i, (c, t) in enumerate(zip(self.ids, self.texts))]
        B.progress(f"building {len(self.batches)} InsertChunks requests ...")
        self.requests = []
        for a, b in self.batches:
            self.requests.append(vpb.InsertChunksRequest(chunks=[
                vpb.Chunk(content=self.texts[i], chunk_id=self.ids[i], document_id="bench",
                          embedding=self.vectors[i].tolist()) for i in range(a, b)]))
        self.query_lists = [v.tolist() for v in self.query_vectors]


# ----------------------------------------------------------------------------- the three paths
class Library:
    """The store's own library, used the way a user would by hand."""

    def __init__(self, kind: str, data: Dataset, folder: pathlib.Path, chroma_port: int) -> None:
        self.kind, self.data, self.folder, self.port = kind, data, folder, chroma_port
        self.round = 0

    async def open(self) -> None:
        if self.kind == "sqlite-vec":
            import pysqlite3
            import sqlite_vec

            self.conn = pysqlite3.connect(str(self.folder / "library.db"), isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.enable_load_extension(True)
            sqlite_vec.load(self.conn)
        elif self.kind == "faiss":
            import faiss

            faiss.omp_set_num_threads(1)  # as the provider does on its thread: see FaissConfig.omp_threads
        else:
            import chromadb
            from chromadb.config import Settings

            self.client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=self.port,
                                                         settings=Settings(anonymized_telemetry=False))

    async def reset(self, r: int) -> None:
        self.round = r
        if self.kind == "sqlite-vec":
            self.conn.execute(f"CREATE TABLE chunks_{r} (rowid INTEGER PRIMARY KEY, chunk_id TEXT, content TEXT)")
            self.conn.execute(f"CREATE VIRTUAL TABLE vec_{r} USING vec0(embedding float[{DIM}] distance_metric=cosine)")
            self.conn.execute(f"CREATE VIRTUAL TABLE fts_{r} USING fts5(content, content='', contentless_delete=1)")
        elif self.kind == "faiss":
            import faiss

            self.index, self.texts = faiss.IndexFlatIP(DIM), []
        else:
            self.collection = await self.client.create_collection(f"library-{r}", metadata={"hnsw:space": "cosine"},
                                                                  embedding_function=None)

    async def insert(self, a: int, b: int) -> None:
        d, r = self.data, self.round
        if self.kind == "sqlite-vec":
            self.conn.execute("BEGIN")
            self.conn.executemany(f"INSERT INTO chunks_{r} VALUES (?, ?, ?)",
                                  [(i + 1, d.ids[i], d.texts[i]) for i in range(a, b)])
            self.conn.executemany(f"INSERT INTO vec_{r} (rowid, embedding) VALUES (?, ?)",
                                  [(i + 1, d.vectors[i].tobytes()) for i in range(a, b)])
            self.conn.executemany(f"INSERT INTO fts_{r} (rowid, content) VALUES (?, ?)",
                                  [(i + 1, d.texts[i]) for i in range(a, b)])
            self.conn.execute("COMMIT")
        elif self.kind == "faiss":
            self.index.add(d.vectors[a:b])
            self.texts.extend(zip(d.ids[a:b], d.texts[a:b]))
        else:
            await self.collection.upsert(ids=d.ids[a:b], embeddings=d.vectors[a:b], documents=d.texts[a:b])

    async def query_vector(self, q: int) -> str:
        vector, r = self.data.query_vectors[q], self.round
        if self.kind == "sqlite-vec":
            rows = self.conn.execute(
                f"SELECT c.chunk_id, c.content, knn.distance FROM (SELECT rowid, distance FROM vec_{r} "
                f"WHERE embedding MATCH ? AND k = 5) AS knn JOIN chunks_{r} c ON c.rowid = knn.rowid "
                f"ORDER BY knn.distance", (vector.tobytes(),)).fetchall()
            return rows[0][0]
        if self.kind == "faiss":
            _, ids = self.index.search(vector[None, :], 5)
            return [self.texts[i] for i in ids[0]][0][0]
        found = await self.collection.query(query_embeddings=[vector], n_results=5, include=["documents", "distances"])
        return found["ids"][0][0]

    async def query_keyword(self, q: int) -> str | None:
        if self.kind != "sqlite-vec":
            return None  # FAISS has no keyword search; Chroma's $contains filters but does not rank
        words = " OR ".join(f'"{w}"' for w in self.data.keyword_queries[q].split())
        rows = self.conn.execute(
            f"SELECT c.chunk_id, c.content FROM fts_{self.round} f JOIN chunks_{self.round} c ON c.rowid = f.rowid "
            f"WHERE fts_{self.round} MATCH ? ORDER BY bm25(fts_{self.round}) LIMIT 5", (words,)).fetchall()
        return rows[0][0]

    async def drop(self) -> None:
        r = self.round
        if self.kind == "sqlite-vec":
            for table in (f"chunks_{r}", f"vec_{r}", f"fts_{r}"):
                self.conn.execute(f"DROP TABLE {table}")
        elif self.kind == "chromadb":
            await self.client.delete_collection(f"library-{r}")

    async def close(self) -> None:
        if self.kind == "sqlite-vec":
            self.conn.close()


class Provider:
    """stackmesh's provider class, in this process (what the vector_io service runs, minus gRPC)."""

    def __init__(self, kind: str, data: Dataset, folder: pathlib.Path, chroma_url: str) -> None:
        config = {"url": chroma_url} if kind == "chromadb" else {}
        self.stack = parse_config({"version": 2, "providers": {"vector_io": [
            {"provider_id": f"bench-{kind}", "provider_type": PROVIDERS[kind], "config": config}]},
            "mesh": {"registry_db": str(folder / "registry.db")}})
        self.kind, self.data = kind, data

    async def open(self) -> None:
        self.provider = next(iter(build_providers("vector_io", self.stack).values()))
        self.provider.resolve_storage(self.stack)
        await self.provider.initialize()

    async def reset(self, r: int) -> None:
        self.db = VectorDBTarget(f"provider-{r}", f"provider-{r}", EMBED_MODEL, DIM, f"{r}.0")
        await self.provider.create_index(self.db)

    async def insert(self, a: int, b: int) -> None:
        await self.provider.insert(self.db, self.data.records[a:b], self.data.vectors[a:b])

    async def query_vector(self, q: int) -> str:
        hits = await self.provider.query(self.db, self.data.query_vectors[q], "", "vector", 5, -1.0)
        return hits[0].chunk.chunk_id

    async def query_keyword(self, q: int) -> str:
        hits = await self.provider.query(self.db, None, self.data.keyword_queries[q], "keyword", 5, 0.0)
        return hits[0].chunk.chunk_id

    async def drop(self) -> None:
        await self.provider.delete_index(self.db.name)

    async def close(self) -> None:
        await self.provider.shutdown()


class Gateway:
    """InsertChunks / QueryChunks through the gateway (precomputed embeddings: no inference call)."""

    def __init__(self, kind: str, data: Dataset, channel: grpc.aio.Channel) -> None:
        self.kind, self.data = kind, data
        self.vector_io = vector_io_pb2_grpc.VectorIOServiceStub(channel)
        self.vector_dbs = registry_pb2_grpc.VectorDBsServiceStub(channel)
        self.name = ""

    async def open(self) -> None:
        pass

    async def reset(self, r: int) -> None:
        await self.drop()
        self.name = f"gateway-{self.kind}-{r}"
        await self.vector_dbs.RegisterVectorDB(rpb.RegisterVectorDBRequest(
            vector_db_id=self.name, embedding_model=EMBED_MODEL, provider_id=self.kind), timeout=30)

    async def insert(self, a: int, b: int) -> None:
        request = self.data.requests[a // self.data.batches[0][1]]
        request.vector_db_id = self.name
        await self.vector_io.InsertChunks(request, timeout=120)

    async def query_vector(self, q: int) -> str:
        reply = await self.vector_io.QueryChunks(vpb.QueryChunksRequest(
            vector_db_id=self.name, query_embedding=self.data.query_lists[q], max_chunks=5, score_threshold=-1.0,
            mode=vpb.SEARCH_MODE_VECTOR), timeout=30)
        return reply.chunks[0].chunk.chunk_id

    async def query_keyword(self, q: int) -> str:
        reply = await self.vector_io.QueryChunks(vpb.QueryChunksRequest(
            vector_db_id=self.name, query=self.data.keyword_queries[q], max_chunks=5,
            mode=vpb.SEARCH_MODE_KEYWORD), timeout=30)
        return reply.chunks[0].chunk.chunk_id

    async def drop(self) -> None:
        if self.name:
            await self.vector_dbs.UnregisterVectorDB(rpb.UnregisterVectorDBRequest(vector_db_id=self.name), timeout=30)
            self.name = ""

    async def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- measuring
async def measure(args: argparse.Namespace, data: Dataset, variants: dict[str, dict[str, Any]],
                  results: B.Results, recall: dict[tuple[str, str], list[bool]]) -> None:
    counter = itertools.count()
    for r in range(args.rounds):
        for kind, paths in variants.items():
            B.progress(f"round {r + 1}/{args.rounds}: {kind}")
            for label in B.rotated(list(paths), r):
                variant = paths[label]
                await variant.reset(r)
                times = []
                start = time.perf_counter()
                for a, b in data.batches:
                    t0 = time.perf_counter()
                    await variant.insert(a, b)
                    times.append(time.perf_counter() - t0)
                results.add(f"{kind} insert", label, B.Batch(times, time.perf_counter() - start))

                async def vector_query() -> None:
                    q = next(counter) % len(data.targets)
                    top = await variant.query_vector(q)
                    recall.setdefault((kind, label), []).append(top == data.ids[data.targets[q]])

                results.add(f"{kind} vector", label, await B.sequential(vector_query, args.queries))
                if await variant.query_keyword(0) is not None:
                    results.add(f"{kind} keyword", label, await B.sequential(
                        lambda: variant.query_keyword(next(counter) % len(data.targets)), args.queries))
                if label != "gateway":  # the gateway's vector DB stays until its next round (the last one serves RAG)
                    await variant.drop()


async def rag_latency(args: argparse.Namespace, channel: grpc.aio.Channel, names: dict[str, str],
                      results: B.Results) -> None:
    vector_io = vector_io_pb2_grpc.VectorIOServiceStub(channel)
    inference = inference_pb2_grpc.InferenceServiceStub(channel)
    embedded = await inference.Embeddings(ipb.EmbeddingsRequest(model=EMBED_MODEL, input=QUESTIONS), timeout=60)
    vectors = [list(e.embedding) for e in sorted(embedded.data, key=lambda e: e.index)]
    counter = itertools.count()
    for r in range(args.rounds):
        for kind, name in names.items():
            calls = {
                "end to end": lambda: vector_io.QueryChunks(vpb.QueryChunksRequest(
                    vector_db_id=name, query=QUESTIONS[next(counter) % len(QUESTIONS)], max_chunks=5), timeout=30),
                "embed only": lambda: inference.Embeddings(ipb.EmbeddingsRequest(
                    model=EMBED_MODEL, input=[QUESTIONS[next(counter) % len(QUESTIONS)]]), timeout=30),
                "search only": lambda: vector_io.QueryChunks(vpb.QueryChunksRequest(
                    vector_db_id=name, query_embedding=vectors[next(counter) % len(QUESTIONS)], max_chunks=5,
                    score_threshold=-1.0), timeout=30),
            }
            for label in B.rotated(list(calls), r):
                results.add(f"rag {kind}", label, await B.sequential(calls[label], args.rag))


def report(args: argparse.Namespace, data: Dataset, results: B.Results,
           recall: dict[tuple[str, str], list[bool]]) -> None:
    labels = ("library", "provider", "gateway")
    per_batch = data.batches[0][1]
    print(f"\nINSERT {len(data.ids):,} chunks x {DIM} dims, {per_batch} per call, one call at a time "
          f"(chunks/s; median over {args.rounds} rounds)")
    rows = []
    for kind in PROVIDERS:
        key = f"{kind} insert"
        rate = {label: results.summary(key, label)["rps"] * per_batch for label in labels}
        rows.append([kind, *(rate[label] for label in labels), results.ratio(key, "gateway", "library", "rps"),
                     results.ratio(key, "provider", "library", "rps")])
    print(B.table(["provider", "library", "provider", "gateway", "gateway/library", "provider/library"], rows))

    for mode in ("vector", "keyword"):
        print(f"\nQUERY {mode}, k=5, one at a time (p50 ms; queries/s)" +
              (" and recall@1 of the chunk the query was drawn near" if mode == "vector" else ""))
        rows = []
        for kind in PROVIDERS:
            key = f"{kind} {mode}"
            s = {label: results.summary(key, label) for label in labels}
            row = [kind]
            for label in labels:
                row.append(s[label]["p50_ms"] if s[label]["calls"] else "-")
            for label in labels:
                row.append(s[label]["rps"] if s[label]["calls"] else "-")
            base = "library" if results.get(key, "library") else "provider"
            row += [results.ratio(key, "gateway", base, "rps"), base]
            if mode == "vector":
                row.append(" ".join(f"{np.mean(recall[(kind, label)]):.2f}" for label in labels))
            rows.append(row)
        headers = ["provider", "p50 lib", "p50 prov", "p50 gw", "q/s lib", "q/s prov", "q/s gw", "q/s gw/base", "base"]
        print(B.table(headers + (["recall@1 lib/prov/gw"] if mode == "vector" else []), rows))

    print("\nRAG query through the gateway on the 10k-chunk vector DBs (p50 ms): QueryChunks with the question's text "
          "(embedding via inference + search) vs its halves")
    rows = []
    for kind in PROVIDERS:
        key = f"rag {kind}"
        p50 = {label: results.summary(key, label)["p50_ms"] for label in ("end to end", "embed only", "search only")}
        halves = p50["embed only"] + p50["search only"]
        rows.append([kind, p50["end to end"], p50["embed only"], p50["search only"], p50["end to end"] - halves,
                     p50["end to end"] / halves])
    print(B.table(["provider", "end to end", "embed only", "search only", "e2e - halves", "e2e/halves"], rows))


async def bench(args: argparse.Namespace, mesh: LocalMesh, chroma: ChromaServer, folder: pathlib.Path) -> int:
    data = Dataset(args.chunks, args.batch, max(args.queries, 50))
    channel = grpc.aio.insecure_channel(mesh.url, options=CHANNEL_OPTIONS)
    variants: dict[str, dict[str, Any]] = {}
    try:
        for kind in PROVIDERS:
            kind_dir = folder / kind
            kind_dir.mkdir()
            variants[kind] = {"library": Library(kind, data, kind_dir, chroma.port),
                              "provider": Provider(kind, data, kind_dir, chroma.url),
                              "gateway": Gateway(kind, data, channel)}
            for variant in variants[kind].values():
                await variant.open()
        B.progress("waiting for the embedding model to be discovered ...")
        models = registry_pb2_grpc.ModelsServiceStub(channel)
        deadline = time.monotonic() + 120
        while True:
            try:
                await models.GetModel(rpb.GetModelRequest(model_id=f"sentence-transformers/{EMBED_MODEL}"), timeout=5)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
        results, recall = B.Results(), {}
        await measure(args, data, variants, results, recall)
        B.progress("RAG latency ...")
        await rag_latency(args, channel, {kind: paths["gateway"].name for kind, paths in variants.items()}, results)
        report(args, data, results, recall)
        errors = results.errors()
        for line in errors:
            print(f"ERROR {line}")
        return 1 if errors else 0
    finally:
        for paths in variants.values():
            for variant in paths.values():
                try:
                    if isinstance(variant, Gateway):
                        await variant.drop()
                    await variant.close()
                except Exception as err:  # noqa: BLE001 - cleanup goes on
                    print(f"cleanup: {type(err).__name__}: {err}", file=sys.stderr)
        await channel.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    B.header("vector_io_throughput: library vs stackmesh provider in-process vs through the gateway",
             chunks=args.chunks, dims=DIM, batch=args.batch, rounds=args.rounds, queries=args.queries,
             quick=args.quick)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-vio-") as tmp:
        folder = pathlib.Path(tmp)
        chroma = ChromaServer(folder / "chroma")
        providers = {
            "inference": [{"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"}],
            "vector_io": [{"provider_id": kind, "provider_type": provider_type,
                           "config": {"url": chroma.url} if kind == "chromadb" else {}}
                          for kind, provider_type in PROVIDERS.items()],
        }
        (folder / "mesh").mkdir()
        (folder / "local").mkdir()
        mesh = LocalMesh(folder / "mesh", providers=providers)
        try:
            B.progress("starting chroma, registry, inference, vector_io and gateway processes ...")
            chroma.start()
            mesh.start()
            rc = B.run(lambda: bench(args, mesh, chroma, folder / "local"))
        except Exception as err:  # noqa: BLE001 - report with the services' logs
            B.report_mesh_failure(err, mesh)
            rc = 1
        finally:
            mesh.stop()
            chroma.stop()
    print(f"\n   total {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
