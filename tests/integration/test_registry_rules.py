"""The registry rules of DESIGN §2, one test each, over real gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2

from services.common.errors import ConfigError, error_info_from_rpc_error
from stackmesh.common.v1 import common_pb2 as cpb
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc as rgrpc
from tests.conftest import make_config

LLM, EMB = cpb.MODEL_TYPE_LLM, cpb.MODEL_TYPE_EMBEDDING


def meta(**values) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def start(inproc, tmp_path, backend, **kwargs):
    host, core = await inproc.registry(make_config(tmp_path, backend=backend, **kwargs))
    channel = inproc.channel(host.port)
    return core, rgrpc.ModelsServiceStub(channel), rgrpc.RegistryServiceStub(channel), channel


async def expect_error(coro, code: grpc.StatusCode) -> tuple[str, str, dict]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro
    err = caught.value
    assert err.code() == code, err.details()
    info = error_info_from_rpc_error(err)
    assert info is not None and info.domain == "stackmesh.dev"
    return err.details(), info.reason, dict(info.metadata)


async def test_identifier_is_verbatim_and_provider_model_id_defaults_to_it(inproc, tmp_path, backend):
    _, models, _, _ = await start(inproc, tmp_path, backend)
    reply = await models.RegisterModel(rpb.RegisterModelRequest(model_id="My/Model v1", provider_id="llama-cpp"))
    assert reply.model.identifier == "My/Model v1"
    assert reply.model.provider_resource_id == "My/Model v1"
    assert reply.model.source == cpb.RESOURCE_SOURCE_REGISTERED
    got = await models.GetModel(rpb.GetModelRequest(model_id="My/Model v1"))
    assert got.model.model.model_type == LLM


async def test_discovered_models_are_named_provider_slash_model(inproc, tmp_path, backend):
    core, models, registry, _ = await start(inproc, tmp_path, backend)
    await registry.SyncDiscoveredResources(rpb.SyncDiscoveredResourcesRequest(
        provider_id="llama-cpp", type=cpb.RESOURCE_TYPE_MODEL,
        resources=[cpb.Resource(provider_resource_id="tiny", model=cpb.ModelSpec(model_type=LLM))]))
    got = await models.GetModel(rpb.GetModelRequest(model_id="llama-cpp/tiny"))
    assert got.model.source == cpb.RESOURCE_SOURCE_DISCOVERED
    assert got.model.provider_id == "llama-cpp" and got.model.provider_resource_id == "tiny"
    # The short name resolves too, because exactly one model has that provider id.
    resolved = await registry.ResolveResource(rpb.ResolveResourceRequest(type=cpb.RESOURCE_TYPE_MODEL, identifier="tiny"))
    assert resolved.resource.identifier == "llama-cpp/tiny"


async def test_provider_slash_x_routes_without_registration(inproc, tmp_path, backend):
    _, _, registry, _ = await start(inproc, tmp_path, backend)
    reply = await registry.ResolveResource(rpb.ResolveResourceRequest(
        type=cpb.RESOURCE_TYPE_MODEL, identifier="llama-cpp/some-unregistered.gguf"))
    assert reply.resource.provider_id == "llama-cpp"
    assert reply.resource.provider_resource_id == "some-unregistered.gguf"
    # A prefix that is not a configured provider is just an unknown id.
    await expect_error(registry.ResolveResource(rpb.ResolveResourceRequest(
        type=cpb.RESOURCE_TYPE_MODEL, identifier="nosuch/x")), grpc.StatusCode.NOT_FOUND)


async def test_ambiguous_short_name_is_an_error_listing_candidates(inproc, tmp_path, backend):
    _, models, registry, _ = await start(inproc, tmp_path, backend)
    for provider in ("llama-cpp", "sentence-transformers"):
        await registry.SyncDiscoveredResources(rpb.SyncDiscoveredResourcesRequest(
            provider_id=provider, type=cpb.RESOURCE_TYPE_MODEL, resources=[cpb.Resource(provider_resource_id="twin")]))
    message, reason, metadata = await expect_error(registry.ResolveResource(rpb.ResolveResourceRequest(
        type=cpb.RESOURCE_TYPE_MODEL, identifier="twin")), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "AMBIGUOUS_RESOURCE"
    assert "llama-cpp/twin" in message and "sentence-transformers/twin" in message


async def test_provider_omitted_with_one_candidate_uses_it(inproc, tmp_path, backend):
    providers = {"inference": [{"provider_id": "only", "provider_type": "inline::llama-cpp"}]}
    _, models, _, _ = await start(inproc, tmp_path, backend, providers=providers)
    reply = await models.RegisterModel(rpb.RegisterModelRequest(model_id="m"))
    assert reply.model.provider_id == "only"


async def test_provider_omitted_with_several_candidates_fails_listing_them(inproc, tmp_path, backend):
    _, models, _, _ = await start(inproc, tmp_path, backend)
    message, reason, metadata = await expect_error(
        models.RegisterModel(rpb.RegisterModelRequest(model_id="m")), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "AMBIGUOUS_PROVIDER"
    assert "llama-cpp" in message and "sentence-transformers" in message
    assert metadata["candidates"] == "llama-cpp,sentence-transformers"


async def test_unknown_provider_is_not_found_and_names_the_configured_ones(inproc, tmp_path, backend):
    _, models, _, _ = await start(inproc, tmp_path, backend)
    message, reason, _ = await expect_error(
        models.RegisterModel(rpb.RegisterModelRequest(model_id="m", provider_id="nope")), grpc.StatusCode.NOT_FOUND)
    assert reason == "PROVIDER_NOT_FOUND" and "llama-cpp" in message


async def test_reregistering_the_same_spec_is_a_noop(inproc, tmp_path, backend):
    core, models, _, _ = await start(inproc, tmp_path, backend)
    request = rpb.RegisterModelRequest(model_id="e", provider_id="sentence-transformers", model_type=EMB,
                                       metadata=meta(embedding_dimension=384))
    first = await models.RegisterModel(request)
    revision = core.committed_revision
    second = await models.RegisterModel(request)
    assert second.model == first.model
    assert core.committed_revision == revision


async def test_reregistering_a_different_spec_names_the_differing_fields(inproc, tmp_path, backend):
    _, models, _, _ = await start(inproc, tmp_path, backend)
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="e", provider_id="sentence-transformers",
                                                        model_type=EMB, metadata=meta(embedding_dimension=384)))
    message, reason, metadata = await expect_error(models.RegisterModel(rpb.RegisterModelRequest(
        model_id="e", provider_id="sentence-transformers", provider_model_id="other", model_type=EMB,
        metadata=meta(embedding_dimension=768))), grpc.StatusCode.ALREADY_EXISTS)
    assert reason == "RESOURCE_EXISTS"
    assert set(metadata["differing_fields"].split(",")) == {"provider_resource_id", "metadata"}
    assert "provider_resource_id" in message and "metadata" in message


async def test_embedding_model_without_dimension_is_rejected(inproc, tmp_path, backend):
    _, models, _, _ = await start(inproc, tmp_path, backend)
    message, reason, _ = await expect_error(models.RegisterModel(rpb.RegisterModelRequest(
        model_id="e", provider_id="sentence-transformers", model_type=EMB)), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "EMBEDDING_DIMENSION_MISSING" and "embedding_dimension" in message


async def test_not_found_has_a_hint_how_to_list(inproc, tmp_path, backend):
    _, models, _, _ = await start(inproc, tmp_path, backend)
    message, reason, _ = await expect_error(models.GetModel(rpb.GetModelRequest(model_id="ghost")),
                                            grpc.StatusCode.NOT_FOUND)
    assert "stackmesh models list" in message and reason == "RESOURCE_NOT_FOUND"
    await expect_error(models.UnregisterModel(rpb.UnregisterModelRequest(model_id="ghost")), grpc.StatusCode.NOT_FOUND)


async def test_vector_db_needs_an_embedding_model_of_matching_dimension(inproc, tmp_path, backend):
    providers = {"inference": [{"provider_id": "st", "provider_type": "inline::sentence-transformers"}],
                 "vector_io": [{"provider_id": "faiss", "provider_type": "inline::faiss"}]}
    _, models, _, channel = await start(inproc, tmp_path, backend, providers=providers)
    vdbs = rgrpc.VectorDBsServiceStub(channel)
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="llm", model_type=LLM))
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="emb", model_type=EMB, metadata=meta(embedding_dimension=384)))
    _, reason, _ = await expect_error(vdbs.RegisterVectorDB(rpb.RegisterVectorDBRequest(
        vector_db_id="v", embedding_model="llm")), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "NOT_AN_EMBEDDING_MODEL"
    _, reason, _ = await expect_error(vdbs.RegisterVectorDB(rpb.RegisterVectorDBRequest(
        vector_db_id="v", embedding_model="emb", embedding_dimension=768)), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "DIMENSION_MISMATCH"
    ok = await vdbs.RegisterVectorDB(rpb.RegisterVectorDBRequest(vector_db_id="v", embedding_model="emb"))
    assert ok.vector_db.vector_db.embedding_dimension == 384


async def test_all_seven_resource_types_register_get_list_unregister(inproc, tmp_path, backend):
    providers = {"inference": [{"provider_id": "st", "provider_type": "inline::sentence-transformers"}],
                 "safety": [{"provider_id": "llama-guard", "provider_type": "inline::llama-guard"}],
                 "vector_io": [{"provider_id": "faiss", "provider_type": "inline::faiss"}],
                 "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs"}],
                 "scoring": [{"provider_id": "basic", "provider_type": "inline::basic"}],
                 "eval": [{"provider_id": "meta-reference", "provider_type": "inline::meta-reference"}],
                 "tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}]}
    _, models, _, channel = await start(inproc, tmp_path, backend, providers=providers)
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="emb", model_type=EMB, metadata=meta(embedding_dimension=384)))
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="llm", model_type=LLM))
    # what the benchmark case refers to
    await rgrpc.DatasetsServiceStub(channel).RegisterDataset(rpb.RegisterDatasetRequest(
        dataset_id="qa", purpose="eval/question-answer", rows=[meta(input_query="q", expected_answer="a")]))
    await rgrpc.ScoringFunctionsServiceStub(channel).RegisterScoringFunction(rpb.RegisterScoringFunctionRequest(
        scoring_fn_id="eq", provider_scoring_fn_id="basic::equality"))
    prerequisites = {"qa", "eq"}
    cases = [
        ("Shield", "Shields", "shield", rpb.RegisterShieldRequest(shield_id="x", provider_shield_id="llm")),
        ("VectorDB", "VectorDBs", "vector_db", rpb.RegisterVectorDBRequest(vector_db_id="x", embedding_model="emb")),
        ("Dataset", "Datasets", "dataset", rpb.RegisterDatasetRequest(dataset_id="x", purpose="eval/question-answer",
                                                                      uri="file:///tmp/qa.jsonl")),
        ("ScoringFunction", "ScoringFunctions", "scoring_fn",
         rpb.RegisterScoringFunctionRequest(scoring_fn_id="x", description="d", return_type="number")),
        ("Benchmark", "Benchmarks", "benchmark", rpb.RegisterBenchmarkRequest(benchmark_id="x", dataset_id="qa",
                                                                              scoring_functions=["eq"])),
        ("ToolGroup", "ToolGroups", "toolgroup", rpb.RegisterToolGroupRequest(toolgroup_id="x",
                                                                              mcp_endpoint="http://127.0.0.1:1/mcp")),
    ]
    for name, plural, id_prefix, request in cases:
        stub = getattr(rgrpc, f"{plural}ServiceStub")(channel)
        registered = await getattr(stub, f"Register{name}")(request)
        resource = getattr(registered, registered.DESCRIPTOR.fields[0].name)
        assert resource.identifier == "x" and resource.provider_id, name
        id_field = f"{id_prefix}_id"
        got = await getattr(stub, f"Get{name}")(getattr(rpb, f"Get{name}Request")(**{id_field: "x"}))
        assert getattr(got, got.DESCRIPTOR.fields[0].name) == resource
        listed = await getattr(stub, f"List{plural}")(getattr(rpb, f"List{plural}Request")())
        listed_ids = [r.identifier for r in getattr(listed, listed.DESCRIPTOR.fields[0].name)]
        assert [i for i in listed_ids if i not in prerequisites] == ["x"]
        await getattr(stub, f"Unregister{name}")(getattr(rpb, f"Unregister{name}Request")(**{id_field: "x"}))
        await expect_error(getattr(stub, f"Get{name}")(getattr(rpb, f"Get{name}Request")(**{id_field: "x"})),
                           grpc.StatusCode.NOT_FOUND)


async def test_list_pages_through_everything_once(inproc, tmp_path, backend):
    _, models, _, _ = await start(inproc, tmp_path, backend)
    for i in range(25):
        await models.RegisterModel(rpb.RegisterModelRequest(model_id=f"m{i:02d}", provider_id="llama-cpp"))
    seen, token = [], ""
    while True:
        page = await models.ListModels(rpb.ListModelsRequest(page_size=7, page_token=token))
        assert len(page.models) <= 7
        seen += [m.identifier for m in page.models]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"m{i:02d}" for i in range(25)]
    await expect_error(models.ListModels(rpb.ListModelsRequest(page_token="%%%")), grpc.StatusCode.INVALID_ARGUMENT)


async def test_revisions_increase_and_watch_streams_every_change(inproc, tmp_path, backend):
    core, models, registry, _ = await start(inproc, tmp_path, backend)
    watch = registry.WatchResources(rpb.WatchResourcesRequest(since_revision=0))
    first = await watch.read()
    assert first.event_type == rpb.WATCH_EVENT_TYPE_RESET
    assert (await watch.read()).event_type == rpb.WATCH_EVENT_TYPE_SYNCED
    revisions = []
    for name in ("a", "b"):
        reply = await models.RegisterModel(rpb.RegisterModelRequest(model_id=name, provider_id="llama-cpp"))
        revisions.append(reply.model.revision)
    await models.UnregisterModel(rpb.UnregisterModelRequest(model_id="a"))
    events = [await asyncio.wait_for(watch.read(), 2) for _ in range(3)]
    assert [(e.event_type, e.resource.identifier) for e in events] == [
        (rpb.WATCH_EVENT_TYPE_PUT, "a"), (rpb.WATCH_EVENT_TYPE_PUT, "b"), (rpb.WATCH_EVENT_TYPE_DELETE, "a")]
    assert [e.revision for e in events] == sorted(e.revision for e in events)
    assert revisions[0] < revisions[1] < events[2].revision == core.committed_revision
    watch.cancel()
    # Resuming from a revision replays exactly what came after it.
    resumed = registry.WatchResources(rpb.WatchResourcesRequest(since_revision=revisions[0]))
    replay = [await resumed.read() for _ in range(3)]
    assert [(e.event_type, e.resource.identifier) for e in replay[:2]] == [
        (rpb.WATCH_EVENT_TYPE_PUT, "b"), (rpb.WATCH_EVENT_TYPE_DELETE, "a")]
    assert replay[2].event_type == rpb.WATCH_EVENT_TYPE_SYNCED and replay[2].revision == core.committed_revision
    resumed.cancel()


async def test_discovery_sync_is_one_atomic_diff_and_never_touches_registered(inproc, tmp_path, backend):
    core, models, registry, _ = await start(inproc, tmp_path, backend)
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="llama-cpp/keep", provider_id="llama-cpp",
                                                        provider_model_id="keep"))

    async def sync(*names, **metadata):
        return await registry.SyncDiscoveredResources(rpb.SyncDiscoveredResourcesRequest(
            provider_id="llama-cpp", type=cpb.RESOURCE_TYPE_MODEL,
            resources=[cpb.Resource(provider_resource_id=n, metadata=meta(**metadata)) for n in names]))

    reply = await sync("a", "b", "keep")
    assert (reply.added, reply.updated, reply.removed) == (2, 0, 0)  # "keep" is the user's: untouched
    watch = registry.WatchResources(rpb.WatchResourcesRequest(since_revision=reply.revision))
    assert (await watch.read()).event_type == rpb.WATCH_EVENT_TYPE_SYNCED
    reply = await sync("b", "c", context_length=4096)  # a removed, b changed, c added
    assert (reply.added, reply.updated, reply.removed) == (1, 1, 1)
    events = [await asyncio.wait_for(watch.read(), 2) for _ in range(3)]
    # b is updated in place (a PUT): there is no moment where it is missing.
    assert [(e.event_type, e.resource.identifier) for e in events] == [
        (rpb.WATCH_EVENT_TYPE_PUT, "llama-cpp/b"), (rpb.WATCH_EVENT_TYPE_PUT, "llama-cpp/c"),
        (rpb.WATCH_EVENT_TYPE_DELETE, "llama-cpp/a")]
    watch.cancel()
    reply = await sync()  # a provider that lists nothing loses its discovered entries
    assert reply.removed == 2
    listed = await models.ListModels(rpb.ListModelsRequest())
    assert [m.identifier for m in listed.models] == ["llama-cpp/keep"]
    assert listed.models[0].source == cpb.RESOURCE_SOURCE_REGISTERED


async def test_config_is_the_source_of_truth_for_config_resources(inproc, tmp_path, backend):
    resources = {"models": [
        {"model_id": "cfg-a", "provider_id": "llama-cpp"},
        {"model_id": "cfg-b", "provider_id": "llama-cpp", "metadata": {"v": 1}},
    ]}
    host, core = await inproc.registry(make_config(tmp_path, backend=backend, resources=resources))
    models = rgrpc.ModelsServiceStub(inproc.channel(host.port))
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="mine", provider_id="llama-cpp"))
    assert (await models.GetModel(rpb.GetModelRequest(model_id="cfg-a"))).model.source == cpb.RESOURCE_SOURCE_CONFIG
    await host.stop()
    # Restart with cfg-a removed from the file and cfg-b changed.
    changed = {"models": [{"model_id": "cfg-b", "provider_id": "llama-cpp", "metadata": {"v": 2}}]}
    host, core = await inproc.registry(make_config(tmp_path, backend=backend, resources=changed))
    models = rgrpc.ModelsServiceStub(inproc.channel(host.port))
    listed = {m.identifier: m for m in (await models.ListModels(rpb.ListModelsRequest())).models}
    assert set(listed) == {"cfg-b", "mine"}
    assert listed["cfg-b"].metadata["v"] == 2
    assert listed["mine"].source == cpb.RESOURCE_SOURCE_REGISTERED


async def test_config_resource_with_ambiguous_provider_fails_start_with_its_path(inproc, tmp_path, backend):
    from services.common.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        await inproc.registry(make_config(tmp_path, backend=backend, resources={"models": [{"model_id": "x"}]}))
    assert caught.value.path == "registered_resources.models[0]"
    assert "llama-cpp" in caught.value.message


async def test_watch_reaches_the_gateway_cache_quickly(inproc, tmp_path, backend):
    import time

    from services.common.config import ServiceTarget

    config = make_config(tmp_path, backend=backend)
    host, core = await inproc.registry(config)
    config.mesh.registry = ServiceTarget(target=f"127.0.0.1:{host.port}")
    gw_host, forwarder = await inproc.gateway(config)
    assert await forwarder.cache.wait_synced(5)
    models = rgrpc.ModelsServiceStub(inproc.channel(gw_host.port))  # registration through the gateway
    started = time.perf_counter()
    reply = await models.RegisterModel(rpb.RegisterModelRequest(model_id="fresh", provider_id="llama-cpp"))
    await forwarder.cache.wait_revision(reply.model.revision, timeout=1.0)
    elapsed = time.perf_counter() - started
    assert forwarder.cache.index.get(cpb.RESOURCE_TYPE_MODEL, "fresh") is not None
    assert elapsed < 1.0
    await models.UnregisterModel(rpb.UnregisterModelRequest(model_id="fresh"))
    await asyncio.wait_for(_until(lambda: forwarder.cache.index.get(cpb.RESOURCE_TYPE_MODEL, "fresh") is None), 1.0)


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_registered_alias_does_not_make_the_short_name_ambiguous(inproc, tmp_path, backend):
    _, models, registry, _ = await start(inproc, tmp_path, backend)
    await registry.SyncDiscoveredResources(rpb.SyncDiscoveredResourcesRequest(
        provider_id="sentence-transformers", type=cpb.RESOURCE_TYPE_MODEL,
        resources=[cpb.Resource(provider_resource_id="mini", model=cpb.ModelSpec(model_type=EMB),
                                metadata=meta(embedding_dimension=384))]))
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="my-embed", provider_id="sentence-transformers",
                                                        provider_model_id="mini", model_type=EMB,
                                                        metadata=meta(embedding_dimension=384)))
    resolved = await registry.ResolveResource(rpb.ResolveResourceRequest(type=cpb.RESOURCE_TYPE_MODEL, identifier="mini"))
    assert resolved.resource.identifier == "sentence-transformers/mini"


async def test_a_failed_write_is_not_acknowledged_and_leaves_no_trace(inproc, tmp_path, backend, monkeypatch):
    core, models, _, _ = await start(inproc, tmp_path, backend)
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="kept", provider_id="llama-cpp"))

    def disk_full(changes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core.store, "commit", disk_full)
    _, reason, _ = await expect_error(models.RegisterModel(rpb.RegisterModelRequest(
        model_id="lost", provider_id="llama-cpp")), grpc.StatusCode.UNAVAILABLE)
    assert reason == "STORE_WRITE_FAILED"
    monkeypatch.undo()
    listed = await models.ListModels(rpb.ListModelsRequest())
    assert [m.identifier for m in listed.models] == ["kept"]
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="lost", provider_id="llama-cpp"))  # works again


async def test_concurrent_registrations_are_group_committed_and_all_durable(inproc, tmp_path, backend):
    core, models, _, _ = await start(inproc, tmp_path, backend)
    writes = []
    original = core.store.commit
    core.store.commit = lambda changes: (writes.append(len(changes)), original(changes))[1]
    await asyncio.gather(*[models.RegisterModel(rpb.RegisterModelRequest(model_id=f"g{i}", provider_id="llama-cpp"))
                           for i in range(200)])
    assert sum(writes) == 200 and len(writes) < 200  # several registrations share one transaction
    stored, revision = core.store.load()
    assert {r.identifier for r in stored} >= {f"g{i}" for i in range(200)}
    assert revision == core.committed_revision == core.journal.revision


async def test_a_fresh_watcher_gets_the_snapshot_in_batches(inproc, tmp_path, backend):
    core, models, registry, _ = await start(inproc, tmp_path, backend)
    for batch in range(12):
        await asyncio.gather(*[models.RegisterModel(rpb.RegisterModelRequest(model_id=f"s{batch * 100 + i}",
                                                                             provider_id="llama-cpp"))
                               for i in range(100)])
    watch = registry.WatchResources(rpb.WatchResourcesRequest(since_revision=0))
    events = []
    while not events or events[-1].event_type != rpb.WATCH_EVENT_TYPE_SYNCED:
        events.append(await asyncio.wait_for(watch.read(), 5))
    watch.cancel()
    kinds = [e.event_type for e in events]
    assert kinds[0] == rpb.WATCH_EVENT_TYPE_RESET and kinds[-1] == rpb.WATCH_EVENT_TYPE_SYNCED
    assert kinds[1:-1] == [rpb.WATCH_EVENT_TYPE_SNAPSHOT] * 3
    assert sorted(r.identifier for e in events for r in e.resources) == sorted(f"s{i}" for i in range(1200))
    assert events[-1].revision == core.committed_revision


async def test_a_lease_has_one_holder_until_it_expires(inproc, tmp_path, backend):
    _, _, registry, _ = await start(inproc, tmp_path, backend)

    async def acquire(holder: str, ttl: float = 0.5):
        return await registry.AcquireLease(rpb.AcquireLeaseRequest(name="discovery/inference/x", holder=holder,
                                                                   ttl_seconds=ttl))

    assert (await acquire("replica-1")).granted
    taken = await acquire("replica-2")
    assert not taken.granted and taken.holder == "replica-1"
    assert (await acquire("replica-1")).granted  # the holder renews
    await asyncio.sleep(0.6)
    assert (await acquire("replica-2")).granted  # expired: another replica takes over
    await expect_error(registry.AcquireLease(rpb.AcquireLeaseRequest(name="x", holder="")),
                       grpc.StatusCode.INVALID_ARGUMENT)


async def test_an_mcp_tool_group_needs_exactly_one_server(inproc, tmp_path, backend):
    providers = {"inference": [{"provider_id": "st", "provider_type": "inline::sentence-transformers"}],
                 "tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"},
                                  {"provider_id": "rag", "provider_type": "inline::rag-runtime"}]}
    _, _, _, channel = await start(inproc, tmp_path, backend, providers=providers)
    groups = rgrpc.ToolGroupsServiceStub(channel)
    for request in (rpb.RegisterToolGroupRequest(toolgroup_id="t", provider_id="mcp"),
                    rpb.RegisterToolGroupRequest(toolgroup_id="t", provider_id="mcp", mcp_endpoint="http://h/mcp",
                                                 mcp_command=["python", "-m", "x"])):
        _, reason, _ = await expect_error(groups.RegisterToolGroup(request), grpc.StatusCode.INVALID_ARGUMENT)
        assert reason == "MCP_SERVER_MISSING"
    ok = await groups.RegisterToolGroup(rpb.RegisterToolGroupRequest(toolgroup_id="builtin::rag", provider_id="rag"))
    assert ok.tool_group.provider_id == "rag"  # a RAG group needs no server


async def test_one_bad_request_in_a_group_commit_fails_alone(inproc, tmp_path, backend):
    _, models, registry, _ = await start(inproc, tmp_path, backend)
    watch = registry.WatchResources(rpb.WatchResourcesRequest(since_revision=0))
    while (await watch.read()).event_type != rpb.WATCH_EVENT_TYPE_SYNCED:
        pass
    good = [models.RegisterModel(rpb.RegisterModelRequest(model_id=f"ok{i}", provider_id="llama-cpp"))
            for i in range(5)]
    bad = models.RegisterModel(rpb.RegisterModelRequest(model_id="nan", provider_id="sentence-transformers",
                                                        model_type=EMB, metadata=meta(embedding_dimension=float("nan"))))
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(not isinstance(r, Exception) for r in results[:5]), results
    assert isinstance(results[5], grpc.aio.AioRpcError) and results[5].code() == grpc.StatusCode.INVALID_ARGUMENT
    seen = {(await asyncio.wait_for(watch.read(), 2)).resource.identifier for _ in range(5)}
    assert seen == {f"ok{i}" for i in range(5)}  # the watch was not ended by the bad request
    watch.cancel()


EVAL_PROVIDERS = {"inference": [{"provider_id": "st", "provider_type": "inline::sentence-transformers"}],
                  "safety": [{"provider_id": "llama-guard", "provider_type": "inline::llama-guard"},
                             {"provider_id": "code-scanner", "provider_type": "inline::code-scanner"}],
                  "datasetio": [{"provider_id": "localfs", "provider_type": "inline::localfs"}],
                  "scoring": [{"provider_id": "basic", "provider_type": "inline::basic"},
                              {"provider_id": "llm-as-judge", "provider_type": "inline::llm-as-judge"}],
                  "eval": [{"provider_id": "meta-reference", "provider_type": "inline::meta-reference"}]}


async def test_shields_benchmarks_judges_and_datasets_check_what_they_refer_to(inproc, tmp_path, backend):
    _, models, registry, channel = await start(inproc, tmp_path, backend, providers=EVAL_PROVIDERS)
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="emb", model_type=EMB, metadata=meta(embedding_dimension=384)))
    await models.RegisterModel(rpb.RegisterModelRequest(model_id="llm", model_type=LLM))
    shields = rgrpc.ShieldsServiceStub(channel)
    datasets = rgrpc.DatasetsServiceStub(channel)
    functions = rgrpc.ScoringFunctionsServiceStub(channel)
    benchmarks = rgrpc.BenchmarksServiceStub(channel)

    # a llama-guard shield names its model: it must exist and be an LLM; code-scanner needs none
    message, reason, _ = await expect_error(shields.RegisterShield(rpb.RegisterShieldRequest(
        shield_id="guard", provider_id="llama-guard", provider_shield_id="missing")), grpc.StatusCode.NOT_FOUND)
    assert reason == "MODEL_NOT_FOUND" and "'missing'" in message and "guard" in message
    message, reason, _ = await expect_error(shields.RegisterShield(rpb.RegisterShieldRequest(
        shield_id="guard", provider_id="llama-guard", provider_shield_id="emb")), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "NOT_AN_LLM" and "embedding" in message
    guard = await shields.RegisterShield(rpb.RegisterShieldRequest(shield_id="guard", provider_id="llama-guard",
                                                                   provider_shield_id="llm"))
    assert guard.shield.provider_resource_id == "llm"
    await shields.RegisterShield(rpb.RegisterShieldRequest(shield_id="code", provider_id="code-scanner"))

    # datasets: a known purpose, one source, inline rows that fit the purpose
    _, reason, _ = await expect_error(datasets.RegisterDataset(rpb.RegisterDatasetRequest(
        dataset_id="d", purpose="eval/guessing", uri="file:///d.jsonl")), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "UNKNOWN_PURPOSE"
    _, reason, _ = await expect_error(datasets.RegisterDataset(rpb.RegisterDatasetRequest(
        dataset_id="d", purpose="eval/question-answer")), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "DATASET_SOURCE"
    _, reason, _ = await expect_error(datasets.RegisterDataset(rpb.RegisterDatasetRequest(
        dataset_id="d", purpose="eval/question-answer", uri="https://example.com/d.csv")), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "DATASET_URI_UNSUPPORTED"
    message, reason, info = await expect_error(datasets.RegisterDataset(rpb.RegisterDatasetRequest(
        dataset_id="d", purpose="eval/question-answer", rows=[meta(question="q", answer="a")])),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "DATASET_COLUMNS_MISMATCH" and "input_query" in message and "expected_answer" in message
    assert "question" in message and info["missing"] == "input_query,expected_answer"
    _, reason, _ = await expect_error(datasets.RegisterDataset(rpb.RegisterDatasetRequest(
        dataset_id="d", purpose="post-training/messages", rows=[meta(messages="")])), grpc.StatusCode.INVALID_ARGUMENT)
    await datasets.RegisterDataset(rpb.RegisterDatasetRequest(
        dataset_id="qa", purpose="eval/question-answer", rows=[meta(input_query="1+1?", expected_answer="2")]))

    # scoring functions: a judge must be an LLM, aggregations must be known
    judge = lambda model, **extra: rpb.RegisterScoringFunctionRequest(  # noqa: E731
        scoring_fn_id="judge", provider_id="llm-as-judge", params=meta(judge_model=model, **extra))
    _, reason, _ = await expect_error(functions.RegisterScoringFunction(judge("emb")), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "NOT_AN_LLM"
    _, reason, _ = await expect_error(functions.RegisterScoringFunction(judge("nope")), grpc.StatusCode.NOT_FOUND)
    assert reason == "MODEL_NOT_FOUND"
    message, reason, _ = await expect_error(functions.RegisterScoringFunction(judge("llm", aggregation_functions=["mode"])),
                                            grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "UNKNOWN_AGGREGATION" and "mode" in message and "accuracy" in message
    await functions.RegisterScoringFunction(judge("llm", aggregation_functions=["average"]))

    # a benchmark's dataset and scoring functions must exist
    message, reason, _ = await expect_error(benchmarks.RegisterBenchmark(rpb.RegisterBenchmarkRequest(
        benchmark_id="b", dataset_id="missing", scoring_functions=["judge"])), grpc.StatusCode.NOT_FOUND)
    assert reason == "DATASET_NOT_FOUND" and "'missing'" in message
    message, reason, _ = await expect_error(benchmarks.RegisterBenchmark(rpb.RegisterBenchmarkRequest(
        benchmark_id="b", dataset_id="qa", scoring_functions=["judge", "basic::nope"])), grpc.StatusCode.NOT_FOUND)
    assert reason == "SCORING_FUNCTION_NOT_FOUND" and "basic::nope" in message
    _, reason, _ = await expect_error(benchmarks.RegisterBenchmark(rpb.RegisterBenchmarkRequest(
        benchmark_id="b", dataset_id="qa")), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "SCORING_FUNCTIONS_MISSING"

    # functions a provider brings keep their well-known ids (basic::equality), as DISCOVERED
    listed = [cpb.Resource(identifier=f"basic::{name}", scoring_function=cpb.ScoringFunctionSpec(description=name))
              for name in ("equality", "subset_of")]
    await registry.SyncDiscoveredResources(rpb.SyncDiscoveredResourcesRequest(
        provider_id="basic", type=cpb.RESOURCE_TYPE_SCORING_FUNCTION, resources=listed))
    got = (await functions.GetScoringFunction(rpb.GetScoringFunctionRequest(scoring_fn_id="basic::equality"))).scoring_function
    assert (got.source, got.provider_id, got.provider_resource_id) == (
        cpb.RESOURCE_SOURCE_DISCOVERED, "basic", "basic::equality")
    # another provider listing the same id does not take it over
    await registry.SyncDiscoveredResources(rpb.SyncDiscoveredResourcesRequest(
        provider_id="llm-as-judge", type=cpb.RESOURCE_TYPE_SCORING_FUNCTION, resources=listed[:1]))
    got = (await functions.GetScoringFunction(rpb.GetScoringFunctionRequest(scoring_fn_id="basic::equality"))).scoring_function
    assert got.provider_id == "basic"
    bench = await benchmarks.RegisterBenchmark(rpb.RegisterBenchmarkRequest(
        benchmark_id="b", dataset_id="qa", scoring_functions=["judge", "basic::subset_of"]))
    assert bench.benchmark.provider_id == "meta-reference"


async def test_config_entries_may_refer_to_each_other_and_to_models_discovered_later(inproc, tmp_path, backend):
    providers = {**EVAL_PROVIDERS, "inference": [{"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp"},
                                                 {"provider_id": "st", "provider_type": "inline::sentence-transformers"}]}
    resources = {
        # listed after the entries that use them: the registry checks in dependency order
        "benchmarks": [{"benchmark_id": "arith", "dataset_id": "qa", "scoring_functions": ["judge", "later"]}],
        "scoring_fns": [
            {"scoring_fn_id": "judge", "provider_id": "llm-as-judge", "params": {"judge_model": "big"}},
            # its model is listed by llama-cpp only once inference is up: not an error at start
            {"scoring_fn_id": "later", "provider_id": "llm-as-judge",
             "params": {"judge_model": "SmolLM2-135M-Instruct"}},
            # a provider-routed model of unknown type is accepted
            {"scoring_fn_id": "routed", "provider_id": "llm-as-judge", "params": {"judge_model": "llama-cpp/x"}},
        ],
        "datasets": [{"dataset_id": "qa", "purpose": "eval/question-answer",
                      "source": {"type": "rows", "rows": [{"input_query": "1+1?", "expected_answer": "2"}]}}],
        "shields": [{"shield_id": "guard", "provider_id": "llama-guard", "provider_shield_id": "big"}],
        "models": [{"model_id": "big", "provider_id": "llama-cpp", "model_type": "llm"}],
    }
    host, core = await inproc.registry(make_config(tmp_path, providers=providers, resources=resources, backend=backend))
    assert core.get(cpb.RESOURCE_TYPE_BENCHMARK, "arith").benchmark.dataset_id == "qa"
    assert core.get(cpb.RESOURCE_TYPE_SHIELD, "guard").provider_resource_id == "big"
    assert core.get(cpb.RESOURCE_TYPE_SCORING_FUNCTION, "later").source == cpb.RESOURCE_SOURCE_CONFIG
    # a reference of the wrong type is still a config error naming the entry
    bad = {"models": [{"model_id": "emb", "provider_id": "st", "model_type": "embedding",
                       "metadata": {"embedding_dimension": 384}}],
           "shields": [{"shield_id": "guard", "provider_id": "llama-guard", "provider_shield_id": "emb"}]}
    with pytest.raises(ConfigError) as caught:
        await inproc.registry(make_config(tmp_path / "bad", providers=providers, resources=bad, backend=backend))
    assert caught.value.path == "registered_resources.shields[0]" and "not an LLM" in caught.value.message
