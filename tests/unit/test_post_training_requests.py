"""Fine-tuning requests are checked completely before anything is queued: each mistake gets its
code and a message that says what to do.

The core, router and the real provider (SQLite store in a tmp dir, ``train_jobs: false`` so no
worker starts) run for real. Two stand-ins, named as such: ``IndexCache`` resolves from a
``ResourceIndex`` with the registry's own rule (what ``RegistryCache`` does once synced), and
``CountingReader`` answers datasetio's row counts.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.protoutil import struct
from services.common.resource_index import ResourceIndex
from services.inference.providers.inline.llama_cpp.provider import packaged_smollm2_path
from services.post_training.core import PostTrainingCore
from services.common.errors import ResourceExhausted
from services.post_training.providers.base import JobState
from services.post_training.providers.inline.huggingface.config import HuggingFacePostTrainingConfig
from services.post_training.providers.inline.huggingface.provider import HuggingFacePostTrainingProvider
from services.post_training.router import PostTrainingRouter
from services.post_training.spec import FineTuneRequest
from stackmesh.common.v1 import common_pb2 as T
from tests.conftest import make_config

INFERENCE = [
    {"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp"},
    {"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"},
    {"provider_id": "transformers", "provider_type": "inline::transformers"},
    {"provider_id": "vllm", "provider_type": "remote::vllm", "config": {"url": "http://127.0.0.1:9/v1"}},
]
SMOLLM2 = "SmolLM2-135M-Instruct"


class IndexCache:
    """Stand-in for RegistryCache: the same resolution rule over a local index, no registry."""

    def __init__(self, stack) -> None:
        self.index = ResourceIndex()
        self.stack = stack

    async def resolve_fresh(self, resource_type: int, identifier: str) -> T.Resource:
        api = {T.RESOURCE_TYPE_MODEL: "inference", T.RESOURCE_TYPE_DATASET: "datasetio"}[resource_type]
        return self.index.resolve(resource_type, identifier, [p.provider_id for p in self.stack.providers.get(api, [])])


class CountingReader:
    """Stand-in for the datasetio client: row counts only."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    async def count(self, dataset_id: str) -> int:
        return self.counts[dataset_id]


def model(identifier: str, provider_id: str, provider_resource_id: str, model_type=T.MODEL_TYPE_LLM,
          source=T.RESOURCE_SOURCE_REGISTERED, metadata=None) -> T.Resource:
    return T.Resource(type=T.RESOURCE_TYPE_MODEL, identifier=identifier, provider_id=provider_id,
                      provider_resource_id=provider_resource_id, source=source, metadata=struct(metadata),
                      model=T.ModelSpec(model_type=model_type))


def dataset(identifier: str, purpose: str) -> T.Resource:
    return T.Resource(type=T.RESOURCE_TYPE_DATASET, identifier=identifier, provider_id="localfs",
                      source=T.RESOURCE_SOURCE_REGISTERED, dataset=T.DatasetSpec(purpose=purpose, uri="file:///x"))


def build(tmp_path: pathlib.Path, inference=INFERENCE, **config):
    localfs = {"provider_id": "localfs", "provider_type": "inline::localfs"}
    stack = make_config(tmp_path, providers={"inference": inference, "datasetio": [localfs]})
    cache = IndexCache(stack)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for resource in [
        model(f"llama-cpp/{SMOLLM2}", "llama-cpp", SMOLLM2, source=T.RESOURCE_SOURCE_DISCOVERED),
        model("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers", "all-MiniLM-L6-v2",
              T.MODEL_TYPE_EMBEDDING, T.RESOURCE_SOURCE_DISCOVERED),
        model("remote-llm", "vllm", "meta-llama/Llama-3.1-8B"),
        model("smol-by-path", "llama-cpp", str(packaged_smollm2_path())),
        model("missing-gguf", "llama-cpp", str(tmp_path / "gone.gguf")),
        model("tuned-adapter", "transformers", str(adapter), metadata={"base_model": SMOLLM2}),
        model("tuned-merged", "transformers", str(adapter), metadata={"merged_path": str(merged)}),
        model("taken", "transformers", str(merged)),
        dataset("xylo", "post-training/messages"), dataset("qa", "eval/question-answer"),
    ]:
        cache.index.put(resource)
    provider = HuggingFacePostTrainingProvider(
        "huggingface", HuggingFacePostTrainingConfig(data_dir=str(tmp_path / "pt"), train_jobs=False, **config), {})
    provider.bind(stack, mesh=None, cache=cache)
    return PostTrainingCore(PostTrainingRouter(stack, cache), {"huggingface": provider},
                            CountingReader({"xylo": 16, "qa": 20})), provider


@pytest.fixture
async def core(tmp_path):
    core, provider = build(tmp_path)
    await provider.initialize()
    yield core
    await provider.shutdown()


def request(**fields) -> FineTuneRequest:
    values = dict(model=SMOLLM2, dataset_id="xylo", algorithm="lora", batch_size=4, max_seq_len=128, lr=1e-3,
                  config={"training_config": {"n_epochs": 1}})
    values.update(fields)
    return FineTuneRequest(**values)


async def test_a_good_request_is_queued_with_its_defaults_applied(core):
    job = await core.supervised_fine_tune(request(n_epochs=3, job_id="first"))
    assert (job.job_id, job.state, job.model, job.total_steps) == ("first", JobState.SCHEDULED, SMOLLM2, 12)
    assert job.config == {"training_config": {"n_epochs": 1}}  # the request as given
    spec = await core.providers["huggingface"]._db("spec", "first")
    assert (spec.lora_rank, spec.lora_alpha, spec.target_modules) == (8, 16, ("q_proj", "v_proj"))
    assert (spec.base.kind, spec.base.path) == ("gguf", str(packaged_smollm2_path().resolve()))
    assert (await core.supervised_fine_tune(request(model="smol-by-path"))).state == JobState.SCHEDULED


async def test_unknown_names_are_not_found(core):
    with pytest.raises(NotFound, match="model 'no-such-model' not found"):
        await core.supervised_fine_tune(request(model="no-such-model"))
    with pytest.raises(NotFound, match="dataset 'no-such-data' not found"):
        await core.supervised_fine_tune(request(dataset_id="no-such-data"))


async def test_models_that_cannot_be_tuned_here_are_refused_with_the_reason(core):
    with pytest.raises(InvalidArgument, match="model 'all-MiniLM-L6-v2' is an embedding model, not an LLM; only an LLM"):
        await core.supervised_fine_tune(request(model="all-MiniLM-L6-v2"))
    with pytest.raises(FailedPrecondition, match=r"served by provider 'vllm' \(remote::vllm\), whose weights are not"):
        await core.supervised_fine_tune(request(model="remote-llm"))
    with pytest.raises(FailedPrecondition, match="has no GGUF file at"):
        await core.supervised_fine_tune(request(model="missing-gguf"))
    with pytest.raises(FailedPrecondition, match=f"is a LoRA adapter over {SMOLLM2}; fine-tune {SMOLLM2} instead"):
        await core.supervised_fine_tune(request(model="tuned-adapter"))
    job = await core.supervised_fine_tune(request(model="tuned-merged"))  # its merged folder is a base
    spec = await core.providers["huggingface"]._db("spec", job.job_id)
    assert (spec.base.kind, pathlib.Path(spec.base.path).name) == ("transformers", "merged")


async def test_a_dataset_of_another_purpose_is_refused_naming_its_purpose(core):
    with pytest.raises(FailedPrecondition, match="'qa' has purpose 'eval/question-answer'; fine-tuning needs a "
                                                 "dataset of purpose post-training/messages"):
        await core.supervised_fine_tune(request(dataset_id="qa"))
    with pytest.raises(FailedPrecondition, match="validation dataset 'qa' has purpose"):
        await core.supervised_fine_tune(request(validation_dataset_id="qa"))


async def test_ids_already_taken_are_refused(core):
    with pytest.raises(AlreadyExists, match="output_model 'taken' already exists"):
        await core.supervised_fine_tune(request(output_model="taken"))
    await core.supervised_fine_tune(request(job_id="mine", output_model="fresh"))
    with pytest.raises(AlreadyExists, match="job_id 'mine' is already used"):
        await core.supervised_fine_tune(request(job_id="mine"))
    with pytest.raises(AlreadyExists, match="output_model 'fresh' will be registered by job 'mine'"):
        await core.supervised_fine_tune(request(output_model="fresh"))


async def test_two_requests_racing_for_one_output_model_cannot_both_be_queued(core):
    outcomes = await asyncio.gather(*(core.supervised_fine_tune(request(output_model="contested"))
                                      for _ in range(4)), return_exceptions=True)
    queued = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(queued) == 1, outcomes
    assert all(isinstance(o, AlreadyExists) and o.reason == "OUTPUT_MODEL_RESERVED" for o in refused), refused
    assert all(f"will be registered by job '{queued[0].job_id}'" in str(o) for o in refused)
    await core.cancel_job(queued[0].job_id)  # a cancelled job frees the id
    await core.supervised_fine_tune(request(output_model="contested"))


async def test_bad_values_and_limits_are_invalid_and_memory_is_exhausted(core):
    with pytest.raises(InvalidArgument, match="would run 5000 optimizer steps"):
        await core.supervised_fine_tune(request(n_epochs=1250))
    with pytest.raises(InvalidArgument, match="batch_size 64 is over"):
        await core.supervised_fine_tune(request(batch_size=64))
    with pytest.raises(InvalidArgument, match="lr must not be negative"):
        await core.supervised_fine_tune(request(lr=-1.0))
    with pytest.raises(InvalidArgument, match="algorithm_config is required"):
        await core.supervised_fine_tune(request(algorithm=""))
    with pytest.raises(InvalidArgument, match="job_id '../x' is not valid"):
        await core.supervised_fine_tune(request(job_id="../x"))
    with pytest.raises(ResourceExhausted, match=r"GiB of memory .* lower batch_size or max_seq_len, use lora"):
        await core.supervised_fine_tune(request(algorithm="full", batch_size=32, max_seq_len=1024))


async def test_output_model_needs_a_transformers_inference_provider(tmp_path):
    core, provider = build(tmp_path, inference=[p for p in INFERENCE if p["provider_id"] != "transformers"])
    await provider.initialize()
    try:
        with pytest.raises(FailedPrecondition, match="output_model needs an inline::transformers inference provider"):
            await core.supervised_fine_tune(request(output_model="new-model"))
        assert (await core.supervised_fine_tune(request())).state == JobState.SCHEDULED  # artifacts only: fine
    finally:
        await provider.shutdown()


async def test_the_queue_is_bounded(tmp_path):
    core, provider = build(tmp_path, max_queued_jobs=1)
    await provider.initialize()
    try:
        await core.supervised_fine_tune(request())
        with pytest.raises(ResourceExhausted, match=r"1 post-training jobs are already waiting \(max_queued_jobs 1\)"):
            await core.supervised_fine_tune(request())
    finally:
        await provider.shutdown()


async def test_jobs_are_listed_newest_first_in_pages(core):
    for job_id in ("one", "two", "three"):
        await core.supervised_fine_tune(request(job_id=job_id))
    page, token = await core.list_jobs(2, "")
    assert [j.job_id for j in page] == ["three", "two"] and token
    page, token = await core.list_jobs(2, token)
    assert [j.job_id for j in page] == ["one"] and not token
    with pytest.raises(InvalidArgument, match="page_token is not one this server issued"):
        await core.list_jobs(2, "bm90IGpzb24=")
    cancelled = await core.cancel_job("two")  # a job waiting in the queue is cancelled in the store
    assert cancelled.state == JobState.CANCELLED and (await core.job_status("two")).state == JobState.CANCELLED
    with pytest.raises(NotFound, match="post-training job 'nope' not found"):
        await core.job_status("nope")
