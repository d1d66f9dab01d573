"""The three vector_io providers called in-process: real SQLite files, real FAISS, a real Chroma server.

Vectors here are random (no model): each chunk's embedding is known, so the nearest chunk is known.
"""

from __future__ import annotations

import pathlib
import sqlite3

import numpy as np
import pytest

from services.common.config import load_config, parse_config
from services.common.errors import FailedPrecondition, Unavailable
from services.common.provider_host import build_providers
from services.vector_io.core import ChunkInput, prepare
from services.vector_io.providers.base import SearchMode, VectorDBTarget
from services.common.storage import data_dir
from tests.support.chroma_server import ChromaServer

DIM = 16
TEXTS = [
    "Employees receive 25 days of paid vacation per year.",
    "The cafeteria serves lunch from noon until two.",
    "Reset your password in the IT portal.",
    "Parking permits are issued by the facilities team.",
    "Expense reports need receipts attached.",
    "Remote work is allowed three days a week.",
]


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    with ChromaServer(tmp_path_factory.mktemp("chroma") / "data") as server:
        yield server


def _config(tmp_path: pathlib.Path, entries: list[dict]):
    return parse_config({"version": 2, "providers": {"vector_io": entries},
                         "mesh": {"registry_db": str(tmp_path / "registry.db")}})


async def _open(tmp_path: pathlib.Path, provider_type: str, chroma_url: str = "", **config):
    if provider_type == "remote::chromadb":
        config.setdefault("url", chroma_url)
    stack = _config(tmp_path, [{"provider_id": "p", "provider_type": provider_type, "config": config}])
    provider = build_providers("vector_io", stack)["p"]
    provider.resolve_storage(stack)
    await provider.initialize()
    return provider


def _db(name: str, token: str = "1.000000001", dimension: int = DIM) -> VectorDBTarget:
    return VectorDBTarget(identifier=name, name=name, embedding_model="test-embed", dimension=dimension, token=token)


def _corpus(seed: int = 0) -> tuple[list, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(TEXTS), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = prepare([ChunkInput(content=t, metadata={"source": "handbook"}, embedding=(), document_id="handbook")
                       for t in TEXTS])
    return records, vectors


PROVIDERS = ["inline::sqlite-vec", "inline::faiss", "remote::chromadb"]


@pytest.fixture(params=PROVIDERS)
async def provider(request, tmp_path):
    url = request.getfixturevalue("chroma").url if request.param == "remote::chromadb" else ""
    opened = await _open(tmp_path, request.param, url)
    yield opened
    for name in await opened.list_indexes():
        await opened.delete_index(name)
    await opened.shutdown()


async def test_vector_keyword_and_hybrid_rank_the_right_chunk_first(provider):
    db = _db("handbook")
    await provider.create_index(db)
    await provider.create_index(db)  # idempotent
    records, vectors = _corpus()
    await provider.insert(db, records, vectors)

    near = vectors[2] + 0.05 * np.ones(DIM, dtype=np.float32)
    hits = await provider.query(db, near, "", SearchMode.VECTOR, 3, -1.0)
    assert [h.chunk.content for h in hits][0] == TEXTS[2]
    assert len(hits) == 3 and hits[0].score > hits[1].score and hits[0].score == pytest.approx(
        float(near @ vectors[2] / np.linalg.norm(near)), abs=1e-3)
    top = hits[0].chunk
    assert top.document_id == "handbook" and top.position == 2
    assert top.metadata == {"source": "handbook", "document_id": "handbook", "position": 2, "chunk_id": top.chunk_id}

    hits = await provider.query(db, None, "Which team issues PARKING permits?", SearchMode.KEYWORD, 5, 0.0)
    assert hits[0].chunk.content == TEXTS[3] and hits[0].score > 0
    assert await provider.query(db, None, "zebra", SearchMode.KEYWORD, 5, 0.0) == []

    # hybrid: the keyword half says "lunch" (chunk 1), the vector half says chunk 1 too: first either way
    hits = await provider.query(db, vectors[1], "lunch", SearchMode.HYBRID, 2, 0.0)
    assert hits[0].chunk.content == TEXTS[1] and hits[0].score == pytest.approx(2 / 61)
    # ... and with the halves disagreeing both candidates come back, fused
    hits = await provider.query(db, vectors[4], "lunch", SearchMode.HYBRID, 6, 0.0)
    assert {TEXTS[1], TEXTS[4]} <= {h.chunk.content for h in hits[:2]}

    # score_threshold drops weak vector hits
    hits = await provider.query(db, vectors[0], "", SearchMode.VECTOR, 6, 0.99)
    assert [h.chunk.content for h in hits] == [TEXTS[0]]


async def test_insert_with_an_existing_chunk_id_replaces_it(provider):
    db = _db("upsert")
    await provider.create_index(db)
    records, vectors = _corpus()
    await provider.insert(db, records, vectors)
    replaced = prepare([ChunkInput(content="Employees receive 30 days of vacation from 2027.", metadata={},
                                   embedding=(), chunk_id=records[0].chunk_id, document_id="handbook")])
    await provider.insert(db, replaced, vectors[:1])
    hits = await provider.query(db, vectors[0], "", SearchMode.VECTOR, 10, -1.0)
    assert len(hits) == len(TEXTS)
    assert hits[0].chunk.content.startswith("Employees receive 30 days")
    assert not await provider.query(db, None, "paid", SearchMode.KEYWORD, 5, 0.0)  # old text gone from keyword too


async def test_delete_and_stale_registrations(provider):
    db = _db("life")
    await provider.create_index(db)
    records, vectors = _corpus()
    await provider.insert(db, records, vectors)
    assert (await provider.list_indexes())["life"] == db.token
    # the same name registered again later (new token): a fresh, empty index, never the old chunks
    again = _db("life", token="2.000000000")
    await provider.create_index(again)
    assert await provider.query(again, vectors[0], "", SearchMode.VECTOR, 5, -1.0) == []
    await provider.insert(again, records[:1], vectors[:1])
    # a config change of the dimension keeps the registration's token: rebuilt at the new dimension
    wider = _db("life", token=again.token, dimension=2 * DIM)
    await provider.create_index(wider)
    assert await provider.query(wider, np.ones(2 * DIM, dtype=np.float32), "", SearchMode.VECTOR, 5, -1.0) == []
    await provider.delete_index("life")
    await provider.delete_index("life")  # idempotent
    assert "life" not in await provider.list_indexes()


@pytest.mark.parametrize("provider_type", ["inline::sqlite-vec", "inline::faiss"])
async def test_inline_providers_persist_across_restarts(tmp_path, provider_type):
    db = _db("kept")
    records, vectors = _corpus()
    first = await _open(tmp_path, provider_type)
    await first.create_index(db)
    await first.insert(db, records[:3], vectors[:3])
    await first.shutdown()  # graceful: faiss writes its index file

    second = await _open(tmp_path, provider_type)
    assert (await second.list_indexes()) == {"kept": db.token}
    await second.create_index(db)  # what the registry replay does: keeps the data
    hits = await second.query(db, vectors[1], "", SearchMode.VECTOR, 1, 0.0)
    assert hits[0].chunk.content == TEXTS[1]
    await second.insert(db, records[3:], vectors[3:])
    # no shutdown: a crash before faiss flushed its file; the chunk database has everything
    if provider_type == "inline::faiss":
        with pytest.raises(FailedPrecondition, match="in use by another"):
            await _open(tmp_path, provider_type)  # one process per data folder
        second._lock.close()  # what the kernel does for a crashed process
    third = await _open(tmp_path, provider_type)
    hits = await third.query(db, vectors[5], "remote", SearchMode.HYBRID, 1, 0.0)
    assert hits[0].chunk.content == TEXTS[5]
    assert len(await third.query(db, vectors[0], "", SearchMode.VECTOR, 10, -1.0)) == len(TEXTS)
    await third.shutdown()
    await second.shutdown()


async def test_sqlite_vec_keeps_every_vector_db_in_one_wal_file(tmp_path):
    provider = await _open(tmp_path, "inline::sqlite-vec", db_path=str(tmp_path / "store" / "vectors.db"))
    for name in ("a", "weird name/with 'quotes'; DROP TABLE x"):
        await provider.create_index(_db(name))
    await provider.shutdown()
    with sqlite3.connect(tmp_path / "store" / "vectors.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {r[0] for r in conn.execute("SELECT name FROM sm_indexes")}
    assert names == {"a", "weird name/with 'quotes'; DROP TABLE x"}


async def test_chroma_never_touches_collections_it_did_not_create(chroma, tmp_path):
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma.port, settings=Settings(anonymized_telemetry=False))
    client.create_collection("someone-elses", embedding_function=None)
    provider = await _open(tmp_path, "remote::chromadb", chroma.url)
    try:
        with pytest.raises(FailedPrecondition, match="did not create"):
            await provider.create_index(_db("someone-elses"))
        await provider.delete_index("someone-elses")
        assert "someone-elses" in [c.name for c in client.list_collections()]
        assert "someone-elses" not in await provider.list_indexes()
        await provider.create_index(_db("x y/z"))  # not a valid Chroma name: stored under a hashed one
        assert "x y/z" in await provider.list_indexes()
        await provider.delete_index("x y/z")
    finally:
        client.delete_collection("someone-elses")
        await provider.shutdown()


async def test_chroma_unreachable_is_unhealthy_and_unavailable_not_a_crash(tmp_path):
    from tests.support.mesh import free_port

    provider = await _open(tmp_path, "remote::chromadb", f"http://127.0.0.1:{free_port()}", timeout_seconds=5)
    healthy, reason = await provider.health()
    assert not healthy and "unreachable" in reason
    with pytest.raises(Unavailable, match="unreachable"):
        await provider.create_index(_db("x"))
    no_url = await _open(tmp_path, "remote::chromadb", "", url=None)
    healthy, reason = await no_url.health()
    assert not healthy and "has no url" in reason


def test_llama_stack_configs_load_and_place_files_by_their_keys(monkeypatch, tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "llama-stack-0.4.5"
    monkeypatch.setenv("SQLITE_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("CHROMADB_URL", "http://127.0.0.1:8000")
    stack = load_config(root / "starter-config.yaml")
    entries = {p.provider_id: p for p in stack.supported_providers("vector_io")}
    assert {"faiss", "sqlite-vec", "chromadb"} <= set(entries)
    ours = ("inline::faiss", "inline::sqlite-vec", "remote::chromadb")
    assert not [u for u in stack.unsupported if u.provider_type in ours]
    providers = build_providers("vector_io", stack)
    for provider in providers.values():
        provider.resolve_storage(stack)
    assert providers["sqlite-vec"].path == tmp_path / "store" / "sqlite_vec.db"
    assert providers["faiss"].folder == tmp_path / "store" / "vector_io" / "vector_io__faiss"
    assert providers["chromadb"].config.url == "http://127.0.0.1:8000"
    # legacy kvstore and nothing at all
    legacy = _config(tmp_path, [{"provider_id": "f", "provider_type": "inline::faiss",
                                 "config": {"kvstore": {"type": "sqlite", "db_path": str(tmp_path / "kv" / "f.db")}}}])
    kvstore = legacy.providers["vector_io"][0].config["kvstore"]
    assert data_dir(legacy, "f", api="vector_io", kvstore=kvstore) == tmp_path / "kv" / "vector_io" / "f"
    assert data_dir(legacy, "f", api="vector_io") == tmp_path / "vector_io" / "f"
    open_benchmark = load_config(root / "open-benchmark-config.yaml")
    assert "sqlite-vec" in {p.provider_id for p in open_benchmark.supported_providers("vector_io")}


async def test_sqlite_vec_replicas_can_share_one_file(tmp_path):
    first = await _open(tmp_path, "inline::sqlite-vec")
    second = await _open(tmp_path, "inline::sqlite-vec")  # a second replica of the service on the same file
    try:
        db = _db("shared")
        await first.create_index(db)
        await second.create_index(db)  # both replicas see the PUT: one index
        records, vectors = _corpus()
        await first.insert(db, records, vectors)
        hits = await second.query(db, vectors[4], "", SearchMode.VECTOR, 1, 0.0)
        assert hits[0].chunk.content == TEXTS[4]
        await first.delete_index("shared")
        await first.create_index(_db("other"))  # takes a new table id, never the dropped one
        with pytest.raises(FailedPrecondition, match="no index"):
            await second.query(db, vectors[4], "", SearchMode.VECTOR, 1, 0.0)
    finally:
        await first.shutdown()
        await second.shutdown()
