"""vector_io in the whole mesh, as real processes on 127.0.0.1, called through the gateway like a user:
registry + inference (MiniLM embeddings, SmolLM2) + vector_io (sqlite-vec, faiss, Chroma) + gateway,
and a real `chroma run` server."""

from __future__ import annotations

import sqlite3
import time

import grpc
import pytest

from stackmesh.client import StackmeshClient, StackmeshClientError
from stackmesh.vector_io.v1 import vector_io_pb2 as vpb
from tests.support.chroma_server import ChromaServer
from tests.support.mesh import DEFAULT_PROVIDERS, LocalMesh

pytestmark = pytest.mark.slow

EMBED_MODEL = "all-MiniLM-L6-v2"
CHAT_MODEL = "SmolLM2-135M-Instruct"
HANDBOOK = [
    "Employees receive 25 days of paid vacation per year, plus public holidays.",
    "The office cafeteria serves lunch from 11:30 to 14:00 on weekdays.",
    "To reset your password, open the IT portal and choose 'Forgot password'.",
    "Parking permits for the garage are issued by the facilities team.",
    "Expense reports must be submitted within 30 days with receipts attached.",
    "Remote work is allowed up to three days a week with manager approval.",
    "The fire assembly point is the north end of the visitor car park.",
    "New laptops are ordered through the IT service desk; delivery takes a week.",
    "Health insurance covers dental care after a six month waiting period.",
    "Bicycles can be stored in the basement bike room.",
]
# (mode, question, index of the chunk that answers it)
QUESTIONS = [
    ("vector", "How many holidays off do I get each year?", 0),
    ("keyword", "cafeteria lunch hours", 1),
    ("hybrid", "I forgot my password, how do I reset it?", 2),
]
PROVIDER_IDS = ["sqlite-vec", "faiss", "chromadb"]


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    with ChromaServer(tmp_path_factory.mktemp("chroma") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, chroma):
    directory = tmp_path_factory.mktemp("mesh")
    providers = {
        "inference": DEFAULT_PROVIDERS["inference"],
        "vector_io": [
            {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec",
             "config": {"db_path": str(directory / "sqlite_vec.db")}},
            {"provider_id": "faiss", "provider_type": "inline::faiss", "config": {}},
            {"provider_id": "chromadb", "provider_type": "remote::chromadb", "config": {"url": chroma.url}},
        ],
    }
    with LocalMesh(directory, providers=providers) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh):
    with StackmeshClient(mesh.url) as sm:
        deadline = time.monotonic() + 60  # discovery of the inline models is asynchronous
        while time.monotonic() < deadline and len(sm.list("models")) < 2:
            time.sleep(0.1)
        yield sm


def insert(client: StackmeshClient, vector_db_id: str, chunks: list[vpb.Chunk]) -> vpb.InsertChunksResponse:
    try:
        return client.vector_io.InsertChunks(vpb.InsertChunksRequest(vector_db_id=vector_db_id, chunks=chunks),
                                             timeout=60)
    except grpc.RpcError as err:
        raise StackmeshClientError.from_rpc_error(err) from None


def handbook_chunks() -> list[vpb.Chunk]:
    chunks = []
    for text in HANDBOOK:
        chunk = vpb.Chunk(content=text, document_id="handbook.md")
        chunk.metadata.update({"source": "handbook.md"})
        chunks.append(chunk)
    return chunks


def expect_error(code: grpc.StatusCode, fn, *args, **kwargs) -> StackmeshClientError:
    with pytest.raises(StackmeshClientError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def indexes_on_disk(mesh: LocalMesh) -> set[str]:
    with sqlite3.connect(mesh.directory / "sqlite_vec.db") as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sm_indexes")}


@pytest.mark.parametrize("provider_id", PROVIDER_IDS)
def test_retrieval_through_the_gateway_then_unregister(client, provider_id):
    name = f"handbook-{provider_id}"
    db = client.register_vector_db(name, EMBED_MODEL, provider_id=provider_id)
    assert db.vector_db.embedding_dimension == 384  # taken from the model
    reply = insert(client, name, handbook_chunks())
    assert reply.inserted == len(HANDBOOK) and len(set(reply.chunk_ids)) == len(HANDBOOK)
    assert insert(client, name, handbook_chunks()).chunk_ids == reply.chunk_ids  # same text, same ids: no copies

    for mode, question, answer in QUESTIONS:
        hits = client.query_chunks(name, question, mode=mode, max_chunks=3).chunks
        assert hits, (mode, question)
        assert hits[0].chunk.content == HANDBOOK[answer], (mode, [h.chunk.content for h in hits])
        assert len(hits) <= 3 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        top = hits[0].chunk
        assert top.document_id == "handbook.md" and top.chunk_id == reply.chunk_ids[answer]
        assert dict(top.metadata) == {"source": "handbook.md", "document_id": "handbook.md",
                                      "position": answer, "chunk_id": top.chunk_id}
    assert len(client.query_chunks(name, "vacation", mode="vector", max_chunks=20).chunks) == len(HANDBOOK)
    assert client.query_chunks(name, "vacation", mode="vector", score_threshold=0.99).chunks == []

    client.unregister("vector-dbs", name)
    deadline = time.monotonic() + 2  # the vector_io service follows the registry's watch
    while True:
        try:
            client.query_chunks(name, "vacation")
        except StackmeshClientError as err:
            assert err.code == grpc.StatusCode.NOT_FOUND and "stackmesh vector-dbs list" in err.message
            break
        assert time.monotonic() < deadline, "still served after unregister"
        time.sleep(0.05)
    expect_error(grpc.StatusCode.NOT_FOUND, insert, client, name, handbook_chunks()[:1])


def test_register_creates_the_index_and_unregister_deletes_it(mesh, client):
    client.register_vector_db("lifecycle", EMBED_MODEL, provider_id="sqlite-vec")
    deadline = time.monotonic() + 5
    while "lifecycle" not in indexes_on_disk(mesh):  # no data call: the registry event alone creates it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.unregister("vector-dbs", "lifecycle")
    deadline = time.monotonic() + 5
    while "lifecycle" in indexes_on_disk(mesh):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_precomputed_embeddings_and_query_embedding(client):
    client.register_vector_db("precomputed", EMBED_MODEL, provider_id="faiss")
    vectors = client.embed(EMBED_MODEL, HANDBOOK[:4])
    chunks = [vpb.Chunk(content=t, embedding=v, chunk_id=f"c{i}") for i, (t, v) in enumerate(zip(HANDBOOK, vectors))]
    assert list(insert(client, "precomputed", chunks).chunk_ids) == ["c0", "c1", "c2", "c3"]
    query = client.embed(EMBED_MODEL, ["where do I park my car?"])[0]
    reply = client.vector_io.QueryChunks(vpb.QueryChunksRequest(vector_db_id="precomputed", query_embedding=query,
                                                                max_chunks=1), timeout=30)
    top = reply.chunks[0].chunk
    assert top.chunk_id == "c3" and top.document_id == "c3" and top.metadata["position"] == 0
    client.unregister("vector-dbs", "precomputed")


def test_indexes_survive_a_restart_and_follow_the_registry(mesh, client):
    for provider_id in ("sqlite-vec", "faiss"):
        client.register_vector_db(f"kept-{provider_id}", EMBED_MODEL, provider_id=provider_id)
        insert(client, f"kept-{provider_id}", handbook_chunks())
    client.register_vector_db("dropped-while-down", EMBED_MODEL, provider_id="sqlite-vec")
    insert(client, "dropped-while-down", handbook_chunks()[:1])
    vector_io = mesh.services["vector_io"]

    def answers_after_restart() -> None:
        deadline = time.monotonic() + 20
        for provider_id in ("sqlite-vec", "faiss"):
            while True:
                try:
                    hits = client.query_chunks(f"kept-{provider_id}", "Which team issues parking permits?",
                                               mode="hybrid", max_chunks=1).chunks
                    break
                except StackmeshClientError as err:  # the gateway reconnecting to the restarted service
                    assert err.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, err
                    time.sleep(0.2)
            assert hits[0].chunk.content == HANDBOOK[3], provider_id

    vector_io.stop()  # graceful: faiss writes its index files
    client.unregister("vector-dbs", "dropped-while-down")  # missed by the stopped service ...
    vector_io.start()
    answers_after_restart()
    deadline = time.monotonic() + 10
    while "dropped-while-down" in indexes_on_disk(mesh):  # ... and caught up from the registry
        assert time.monotonic() < deadline
        time.sleep(0.1)

    insert(client, "kept-faiss", [vpb.Chunk(content="The rooftop terrace opens in May.", document_id="news")])
    vector_io.kill9()  # before faiss flushed that insert to its index file: rebuilt from its chunk database
    vector_io.start()
    answers_after_restart()
    hits = client.query_chunks("kept-faiss", "rooftop terrace", mode="keyword", max_chunks=1).chunks
    assert hits[0].chunk.document_id == "news"
    for provider_id in ("sqlite-vec", "faiss"):
        client.unregister("vector-dbs", f"kept-{provider_id}")


def test_bad_input_gets_the_right_status(client):
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.register_vector_db, "llm-backed", CHAT_MODEL,
                       provider_id="sqlite-vec")
    assert "not an embedding model" in err.message
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.register_vector_db, "wrong-dim", EMBED_MODEL,
                       provider_id="sqlite-vec", embedding_dimension=768)
    assert "768" in err.message and "384" in err.message

    client.register_vector_db("strict", EMBED_MODEL, provider_id="sqlite-vec")
    try:
        bad = [vpb.Chunk(content="fine"), vpb.Chunk(content="three dims", embedding=[0.1, 0.2, 0.3])]
        err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, insert, client, "strict", bad)
        assert "chunks[1]" in err.message and "384" in err.message and err.reason == "EMBEDDING_DIMENSION_MISMATCH"
        err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, insert, client, "strict",
                           [vpb.Chunk(content="fine"), vpb.Chunk(content="  ")])
        assert "chunks[1]" in err.message and err.reason == "CHUNK_CONTENT_MISSING"
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, insert, client, "strict", [])
        with pytest.raises(grpc.RpcError) as caught:
            client.vector_io.QueryChunks(vpb.QueryChunksRequest(vector_db_id="strict", query_embedding=[1.0] * 3))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.query_chunks, "strict", "", mode="keyword")
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.query_chunks, "strict", "x", max_chunks=-1)
        assert insert(client, "strict", [vpb.Chunk(content="nothing was stored by the failed calls")]).inserted == 1
        assert len(client.query_chunks("strict", "stored", max_chunks=10).chunks) == 1
    finally:
        client.unregister("vector-dbs", "strict")
    err = expect_error(grpc.StatusCode.NOT_FOUND, client.query_chunks, "no-such-db", "hello")
    assert "stackmesh vector-dbs list" in err.message
