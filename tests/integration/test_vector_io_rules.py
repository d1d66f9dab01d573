"""vector_io rules without processes: chunk identity, fusion, BM25, and the index life cycle driven by
registry watch events (a real RegistryCache fed the events a registry sends, a real sqlite-vec file)."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.common.protoutil import struct
from services.common.registry_cache import RegistryCache
from services.vector_io.core import ChunkInput, derived_chunk_id, given_embeddings, prepare
from services.vector_io.indexes import IndexLifecycle, target_of
from services.vector_io.providers.base import ChunkRecord, ScoredChunk, VectorDBTarget, reciprocal_rank_fusion
from services.vector_io.providers.keyword import BM25Index
from stackmesh.common.v1 import common_pb2 as cpb
from stackmesh.registry.v1 import registry_pb2 as rpb
from tests.integration.test_vector_io_providers import _open


def chunk(content: str, **kwargs) -> ChunkInput:
    return ChunkInput(content=content, metadata=kwargs.pop("metadata", {}), embedding=kwargs.pop("embedding", ()),
                      **kwargs)


def test_chunk_identity_document_and_position():
    records = prepare([chunk("a", document_id="doc"), chunk("b", document_id="doc"), chunk("c"),
                       chunk("d", metadata={"document_id": "other", "position": 7, "page": 2}),
                       chunk("e", chunk_id="mine", document_id="doc")])
    assert [(r.document_id, r.position) for r in records] == [("doc", 0), ("doc", 1), (records[2].chunk_id, 0),
                                                              ("other", 7), ("doc", 2)]
    assert records[0].chunk_id == derived_chunk_id("doc", "a") != derived_chunk_id("doc", "b")
    assert records[4].chunk_id == "mine"
    assert records[3].metadata == {"document_id": "other", "position": 7, "page": 2, "chunk_id": records[3].chunk_id}
    # the same text of the same document twice is one chunk (re-inserting a document stores it once)
    assert prepare([chunk("a", document_id="doc")])[0].chunk_id == records[0].chunk_id


def test_bad_chunks_are_named_by_index():
    with pytest.raises(InvalidArgument, match=r"chunks\[2\] has no content"):
        prepare([chunk("a"), chunk("b"), chunk(" \n")])
    with pytest.raises(InvalidArgument, match=r"chunks\[0\].metadata.position must be an integer"):
        prepare([chunk("a", metadata={"position": "first"})])
    with pytest.raises(InvalidArgument, match="at least one chunk"):
        prepare([])
    db = VectorDBTarget("docs", "docs", "m", 4, "t")
    matrix, missing = given_embeddings([chunk("a", embedding=[1, 0, 0, 0]), chunk("b")], db)
    assert missing == [1] and matrix[0].tolist() == [1, 0, 0, 0]
    with pytest.raises(InvalidArgument, match=r"chunks\[1\].embedding has 3 dimensions .* holds 4") as caught:
        given_embeddings([chunk("a"), chunk("b", embedding=[1, 2, 3])], db)
    assert caught.value.metadata == {"chunk_index": "1", "expected": "4", "got": "3"}


def test_reciprocal_rank_fusion_rewards_agreement():
    def hits(*ids: str) -> list[ScoredChunk]:
        return [ScoredChunk(ChunkRecord(i, "d", 0, i, {}), 1.0) for i in ids]

    fused = reciprocal_rank_fusion([hits("a", "b", "c"), hits("b", "d")], 3)
    assert [h.chunk.chunk_id for h in fused] == ["b", "a", "d"]  # c (rank 3 in one list only) is cut
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61) and fused[1].score == pytest.approx(1 / 61)


def test_bm25_ranks_rare_words_higher_and_forgets_removed_documents():
    index = BM25Index()
    index.add(1, "the cat sat on the mat")
    index.add(2, "the dog sat on the log")
    index.add(3, "the cat and the dog")
    ranked = index.search("CAT log", 3)
    assert {d for d, _ in ranked} == {1, 2, 3} and all(score > 0 for _, score in ranked)
    index.remove(2)
    assert [d for d, _ in index.search("log", 3)] == []
    index.add(1, "a log cabin")  # replacing a document's text
    assert [d for d, _ in index.search("log", 3)] == [1] and not index.search("mat", 3)


def vector_db_resource(identifier: str, seconds: int, provider_id: str = "p") -> cpb.Resource:
    resource = cpb.Resource(type=cpb.RESOURCE_TYPE_VECTOR_DB, identifier=identifier, provider_id=provider_id,
                            provider_resource_id=identifier, metadata=struct({}),
                            vector_db=cpb.VectorDBSpec(embedding_model="m", embedding_dimension=8))
    resource.create_time.FromSeconds(seconds)
    return resource


async def settle(lifecycle: IndexLifecycle) -> None:
    for _ in range(100):
        if lifecycle._queue.empty():
            await asyncio.sleep(0.05)  # the worker finishes the item it took
            if lifecycle._queue.empty():
                return
        await asyncio.sleep(0.01)


async def test_indexes_follow_registry_events_and_resync(tmp_path):
    provider = await _open(tmp_path, "inline::sqlite-vec")
    await provider.create_index(target_of(vector_db_resource("orphan", 1)))  # unregistered while we were down
    cache = RegistryCache(mesh=None, provider_ids=lambda _t: ["p"])  # fed by hand below, never started
    lifecycle = IndexLifecycle({"p": provider}, cache)
    cache.add_listener(lifecycle.on_event)
    lifecycle.start()
    try:
        W = rpb.WatchResourcesResponse
        model = cpb.Resource(type=cpb.RESOURCE_TYPE_MODEL, identifier="m", provider_id="other")
        cache._apply(W(event_type=rpb.WATCH_EVENT_TYPE_RESET, revision=5))
        cache._apply(W(event_type=rpb.WATCH_EVENT_TYPE_SNAPSHOT, resources=[model, vector_db_resource("kept", 2),
                                                                            vector_db_resource("elsewhere", 2, "q")]))
        cache._apply(W(event_type=rpb.WATCH_EVENT_TYPE_SYNCED, revision=5))
        await settle(lifecycle)
        assert await provider.list_indexes() == {"kept": "2.000000000"}

        fresh = vector_db_resource("fresh", 3)
        cache._apply(W(event_type=rpb.WATCH_EVENT_TYPE_PUT, revision=6, resource=fresh))
        await settle(lifecycle)
        assert set(await provider.list_indexes()) == {"kept", "fresh"}

        cache._apply(W(event_type=rpb.WATCH_EVENT_TYPE_DELETE, revision=7, resource=fresh))
        await settle(lifecycle)
        assert set(await provider.list_indexes()) == {"kept"}
        # a request that resolved "fresh" just before the DELETE cannot bring its index back
        with pytest.raises(NotFound, match="unregistered"):
            await lifecycle.ensure(provider, target_of(fresh))
        # registered again under the same name: a new registration, a new (empty) index
        await lifecycle.ensure(provider, target_of(vector_db_resource("fresh", 4)))
        assert (await provider.list_indexes())["fresh"] == "4.000000000"
    finally:
        await lifecycle.stop()
        await provider.shutdown()
