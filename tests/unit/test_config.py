"""The run config loader: Llama Stack 0.4.5 configs, key paths in errors, unsupported providers."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import yaml

from services.common import catalog
from services.common.config import StackConfig, load_config, parse_config
from services.common.errors import ConfigError
from services.registry.config_resources import config_resources
from stackmesh.common.v1 import common_pb2

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "llama-stack-0.4.5"
STARTER = EXAMPLES / "starter-config.yaml"
POSTGRES = EXAMPLES / "starter-run-with-postgres-store.yaml"
OPEN_BENCHMARK = EXAMPLES / "open-benchmark-config.yaml"
ALL_EXAMPLES = [STARTER, POSTGRES, OPEN_BENCHMARK]

# Provider types of the starter config that stackmesh does not run (APIs it does not serve).
STARTER_UNSUPPORTED = {
    "inline::meta-reference", "inline::torchtune-cpu", "inline::localfs",  # agents, post_training, files
    "remote::huggingface", "inline::braintrust",
    "remote::brave-search", "remote::tavily-search", "inline::reference",
}
STARTER_INFERENCE_ALWAYS_ON = [
    "fireworks", "together", "bedrock", "openai", "anthropic", "gemini", "groq", "sambanova",
    "sentence-transformers",
]


def env_vars_of(path: pathlib.Path) -> set[str]:
    return set(re.findall(r"\$\{env\.([A-Za-z0-9_]+)", path.read_text()))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No variable any example references is set; HOME points at tmp_path."""
    for path in ALL_EXAMPLES:
        for name in env_vars_of(path):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("STACKMESH_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


def load_example(path: pathlib.Path, env: dict[str, str] | None = None) -> StackConfig:
    return parse_config(yaml.safe_load(path.read_text()), str(path), env if env is not None else {})


def write(tmp_path: pathlib.Path, text: str, name: str = "run.yaml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(raw: Any, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "test", env or {})
    return info.value


def inference(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 2, "providers": {"inference": list(entries)}, **extra}


LLAMA_CPP = {"provider_id": "llama-cpp", "provider_type": "inline::llama-cpp"}


# --- the Llama Stack 0.4.5 example configs, unmodified -------------------------------------------


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.name)
def test_examples_load_unmodified_with_empty_env(path):
    config = load_example(path)
    assert isinstance(config, StackConfig)
    assert config.source_path == str(path)
    assert config.apis_to_serve() == ["inference", "safety", "vector_io", "datasetio", "scoring", "eval", "tool_runtime"]
    assert config.server.port == 8321
    assert config.supported_providers("inference")


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.name)
def test_examples_load_from_file_with_os_environ_cleared(clean_env, path):
    config = load_config(path)
    assert config.source_path == str(path)
    assert config.name == yaml.safe_load(path.read_text())["image_name"]


def test_starter_with_empty_env(clean_env):
    config = load_config(STARTER)
    assert config.name == "starter"
    ids = [p.provider_id for p in config.supported_providers("inference")]
    assert ids == STARTER_INFERENCE_ALWAYS_ON
    assert {u.provider_type for u in config.unsupported} == STARTER_UNSUPPORTED
    # conditional providers are disabled, not errors
    assert "providers.inference[2] (remote::vllm)" in config.skipped
    assert "providers.inference[0] (remote::cerebras)" in config.skipped
    assert "providers.vector_io[2] (inline::milvus)" in config.skipped
    assert len(config.skipped) == 12
    # empty ${env.X:=} became None in supported providers' configs
    openai = next(p for p in config.providers["inference"] if p.provider_id == "openai")
    assert openai.config == {"api_key": None, "base_url": "https://api.openai.com/v1"}


def test_starter_with_vllm_url_makes_the_vllm_provider_appear():
    env = {"VLLM_URL": "http://vllm.local:8000/v1", "VLLM_MAX_TOKENS": "1024"}
    config = load_example(STARTER, env)
    vllm = [p for p in config.supported_providers("inference") if p.provider_id == "vllm"]
    assert len(vllm) == 1
    assert vllm[0].provider_type == "remote::vllm"
    assert vllm[0].config == {"base_url": "http://vllm.local:8000/v1", "max_tokens": 1024,
                              "api_token": "fake", "tls_verify": True}
    assert not any("remote::vllm" in s for s in config.skipped)


def test_starter_via_load_config_with_env_vars_set(clean_env, tmp_path):
    clean_env.setenv("VLLM_URL", "http://vllm.local:8000/v1")
    clean_env.setenv("OLLAMA_URL", "http://ollama.local:11434/v1")
    clean_env.setenv("SQLITE_STORE_DIR", str(tmp_path / "store"))
    clean_env.setenv("MILVUS_URL", "http://milvus")
    clean_env.setenv("SAFETY_MODEL", "meta-llama/Llama-Guard-3-1B")
    config = load_config(STARTER)
    ids = [p.provider_id for p in config.supported_providers("inference")]
    assert ids[:2] == ["ollama", "vllm"]
    assert ids[2:] == STARTER_INFERENCE_ALWAYS_ON
    ollama = config.providers["inference"][0]
    assert ollama.config["base_url"] == "http://ollama.local:11434/v1"
    assert "inline::milvus" in {u.provider_type for u in config.unsupported}
    assert config.registry_db_path() == tmp_path / "store" / "kvstore.db"
    shields = config.registered_resources.shields
    assert shields[0].provider_id == "llama-guard"
    assert shields[0].provider_shield_id == "meta-llama/Llama-Guard-3-1B"


def test_starter_unsupported_are_named_with_api_and_reason():
    config = load_example(STARTER)
    by_type = {(u.api, u.provider_type): u for u in config.unsupported}
    brave = by_type[("tool_runtime", "remote::brave-search")]
    assert brave.provider_id == "brave-search"
    assert "no such tool_runtime provider" in brave.reason and "inline::rag-runtime" in brave.reason
    assert ("safety", "inline::llama-guard") not in by_type  # served
    assert [p.provider_id for p in config.supported_providers("safety")] == ["llama-guard", "code-scanner"]
    # meta-reference is reused by agents (not served) and eval (served): not a duplicate-id error
    assert ("agents", "inline::meta-reference") in by_type
    assert [p.provider_id for p in config.supported_providers("eval")] == ["meta-reference"]


def test_starter_passthrough_sections_are_kept():
    config = load_example(STARTER)
    assert config.passthrough["vector_stores"]["default_provider_id"] == "faiss"
    assert config.passthrough["safety"] == {"default_shield_id": "llama-guard"}


def test_open_benchmark_models_become_resources():
    config = load_example(OPEN_BENCHMARK)
    models = config.registered_resources.models
    assert [(m.model_id, m.provider_id) for m in models][:2] == [("gpt-4o", "openai"),
                                                                 ("claude-3-5-sonnet-latest", "anthropic")]
    resources, skipped = config_resources(config)
    model_ids = [r.identifier for _, r in resources if r.type == common_pb2.RESOURCE_TYPE_MODEL]
    assert model_ids == ["gpt-4o", "claude-3-5-sonnet-latest", "gemini/gemini-1.5-flash",
                         "meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.1-405B-Instruct"]
    assert resources[0][0] == "registered_resources.models[0]"
    assert any("tavily-search" in s and "not supported" in s for s in skipped)


def test_postgres_storage_port_is_converted_and_registry_db_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_example(POSTGRES, {"POSTGRES_PORT": "6543"})
    assert config.storage["backends"]["kv_default"]["port"] == 6543
    assert config.storage["backends"]["kv_default"]["type"] == "kv_postgres"
    assert config.registry_db_path() == tmp_path / ".stackmesh" / "starter" / "registry.db"


# --- unsupported providers -------------------------------------------------------------------------


def test_unknown_provider_type_is_unsupported_with_available_types():
    config = parse_config(inference(LLAMA_CPP, {"provider_id": "x", "provider_type": "remote::nope",
                                                "config": {"anything": 1}}), "t", {})
    assert [p.provider_id for p in config.supported_providers("inference")] == ["llama-cpp"]
    [u] = config.unsupported
    assert (u.api, u.provider_id, u.provider_type) == ("inference", "x", "remote::nope")
    assert "available:" in u.reason
    for known in ("inline::llama-cpp", "inline::sentence-transformers", "remote::vllm", "remote::openai",
                  "remote::ollama"):
        assert known in u.reason


def test_unserved_api_config_is_not_validated():
    raw = {"providers": {"agents": [{"provider_id": "meta-reference", "provider_type": "inline::meta-reference",
                                     "config": {"whatever": {"nested": True}}}]}}
    config = parse_config(raw, "t", {})
    [u] = config.unsupported
    assert (u.api, u.provider_type) == ("agents", "inline::meta-reference")
    assert "does not serve the 'agents' API" in u.reason
    assert config.apis_to_serve() == []


def test_provider_catalog_has_the_expected_types():
    table = catalog.provider_table("inference")
    for provider_type in ("inline::llama-cpp", "inline::sentence-transformers", "remote::vllm",
                          "remote::openai", "remote::ollama", "remote::tgi"):
        assert provider_type in table
    assert {"inline::sqlite-vec", "inline::faiss", "remote::chromadb"} <= set(catalog.provider_table("vector_io"))
    assert {"inline::rag-runtime", "remote::model-context-protocol"} <= set(catalog.provider_table("tool_runtime"))
    assert catalog.provider_table("agents") == {}


# --- malformed configs: ConfigError with the key path ---------------------------------------------


def test_unknown_top_level_key():
    err = config_error({"version": 2, "providerz": {}})
    assert err.path == "providerz"
    assert "unknown key" in err.message


def test_unknown_key_in_supported_provider_config():
    err = config_error(inference({**LLAMA_CPP, "config": {"n_ctxx": 4096}}))
    assert err.path == "providers.inference[0].config.n_ctxx"
    assert "unknown key" in err.message
    assert str(err).startswith("providers.inference[0].config.n_ctxx: ")
    assert err.metadata == {"path": "providers.inference[0].config.n_ctxx"}
    assert err.reason == "INVALID_CONFIG"


def test_unknown_key_in_remote_provider_config():
    err = config_error(inference({"provider_id": "v", "provider_type": "remote::vllm",
                                  "config": {"base_url": "http://v/v1", "max_tokenz": 5}}))
    assert err.path == "providers.inference[0].config.max_tokenz"


def test_unknown_key_in_provider_entry():
    err = config_error(inference({**LLAMA_CPP, "confg": {}}))
    assert err.path == "providers.inference[0].confg"


def test_wrong_type_in_provider_config():
    err = config_error(inference({**LLAMA_CPP, "config": {"n_ctx": "abc"}}))
    assert err.path == "providers.inference[0].config.n_ctx"
    assert "integer" in err.message


def test_wrong_type_after_substitution():
    err = config_error(inference({**LLAMA_CPP, "config": {"n_ctx": "${env.N_CTX}"}}), {"N_CTX": "big"})
    assert err.path == "providers.inference[0].config.n_ctx"


def test_substituted_int_validates():
    config = parse_config(inference({**LLAMA_CPP, "config": {"n_ctx": "${env.N_CTX:=4096}"}}), "t", {})
    assert config.providers["inference"][0].config == {"n_ctx": 4096}


def test_out_of_range_value_in_provider_config():
    err = config_error(inference({**LLAMA_CPP, "config": {"n_ctx": 16}}))
    assert err.path == "providers.inference[0].config.n_ctx"


def test_wrong_type_top_level_and_server():
    assert config_error({"server": {"port": "abc"}}).path == "server.port"
    assert config_error({"apis": "inference"}).path == "apis"
    assert config_error({"providers": {"inference": {"provider_id": "x"}}}).path == "providers.inference"


def test_missing_provider_id():
    err = config_error(inference({"provider_type": "inline::llama-cpp"}))
    assert err.path == "providers.inference[0].provider_id"


def test_duplicate_provider_id_within_one_api():
    err = config_error(inference(LLAMA_CPP, {"provider_id": "llama-cpp", "provider_type": "remote::vllm"}))
    assert err.path == "providers.inference[1].provider_id"
    assert "llama-cpp" in err.message
    assert "providers.inference[0]" in err.message


def test_same_provider_id_in_two_apis_is_allowed():
    raw = {"providers": {"inference": [{"provider_id": "shared", "provider_type": "inline::llama-cpp"}],
                         "safety": [{"provider_id": "shared", "provider_type": "inline::llama-guard"}]}}
    config = parse_config(raw, "t", {})
    assert [p.provider_id for p in config.supported_providers("inference")] == ["shared"]
    assert [p.provider_id for p in config.supported_providers("safety")] == ["shared"]
    assert config.unsupported == []


def test_duplicate_between_a_disabled_and_an_enabled_provider_is_fine():
    raw = inference({"provider_id": "${env.UNSET:+llama-cpp}", "provider_type": "inline::llama-cpp"},
                    LLAMA_CPP)
    config = parse_config(raw, "t", {})
    assert [p.provider_id for p in config.providers["inference"]] == ["llama-cpp"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "version: 2\nproviders:\n  inference: [\n    {provider_id: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML" in info.value.message
    assert re.search(r"line \d+", info.value.message)
    assert str(path) in info.value.message


def test_yaml_syntax_error_line_number_is_exact(tmp_path):
    path = write(tmp_path, "version: 2\nimage_name: x\nserver:\n  port: 1\n bad: indent\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 5" in info.value.message


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in info.value.message
    assert "cannot read" in info.value.message


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.path == ""
    assert "mapping" in info.value.message


def test_empty_file_gives_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.providers == {}
    assert config.apis_to_serve() == []
    assert config.server.port == catalog.DEFAULT_PORTS["gateway"]


def test_load_config_uses_stackmesh_config_env(monkeypatch, tmp_path):
    path = write(tmp_path, "version: 2\ndistro_name: from-env\n")
    monkeypatch.setenv("STACKMESH_CONFIG", str(path))
    config = load_config()
    assert config.name == "from-env"
    assert config.source_path == str(path)


def test_load_config_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "version: 2\nimage_name: tilde\n")
    assert load_config("~/run.yaml").name == "tilde"


def test_load_config_substitutes_from_os_environ(monkeypatch, tmp_path):
    monkeypatch.setenv("STACKMESH_TEST_NCTX", "1024")
    path = write(tmp_path, "providers:\n  inference:\n  - provider_id: l\n    provider_type: inline::llama-cpp\n"
                           "    config:\n      n_ctx: ${env.STACKMESH_TEST_NCTX}\n")
    assert load_config(path).providers["inference"][0].config == {"n_ctx": 1024}


def test_missing_required_env_var_from_file(monkeypatch, tmp_path):
    monkeypatch.delenv("STACKMESH_TEST_UNSET_URL", raising=False)
    path = write(tmp_path, "providers:\n  inference:\n  - provider_id: v\n    provider_type: remote::vllm\n"
                           "    config:\n      base_url: ${env.STACKMESH_TEST_UNSET_URL}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == "providers.inference[0].config.base_url"
    assert "STACKMESH_TEST_UNSET_URL" in info.value.message


# --- registered resources --------------------------------------------------------------------------


def test_resource_with_model_id_resolving_empty_is_dropped():
    raw = {"registered_resources": {"models": [
        {"model_id": "${env.UNSET_MODEL:=}", "provider_id": "llama-cpp"},
        {"model_id": "${env.SET_MODEL:=}", "provider_id": "llama-cpp"},
    ]}, **inference(LLAMA_CPP)}
    config = parse_config(raw, "t", {"SET_MODEL": "my-model"})
    assert [m.model_id for m in config.registered_resources.models] == ["my-model"]
    assert "registered_resources.models[0] (model_id resolved empty)" in config.skipped


def test_resource_ids_of_other_kinds_resolving_empty_are_dropped():
    raw = {"registered_resources": {
        "shields": [{"shield_id": "${env.UNSET:+guard}"}],
        "vector_stores": [{"vector_store_id": "${env.UNSET:=}", "embedding_model": "e"}],
        "tool_groups": [{"toolgroup_id": "${env.UNSET:=}"}, {"toolgroup_id": "builtin::rag"}],
    }}
    config = parse_config(raw, "t", {})
    rr = config.registered_resources
    assert rr.shields == [] and rr.vector_stores == []
    assert [t.toolgroup_id for t in rr.tool_groups] == ["builtin::rag"]
    assert len(config.skipped) == 3


def test_vector_store_id_alias_is_accepted():
    raw = {"registered_resources": {"vector_stores": [{"vector_store_id": "docs", "embedding_model": "e",
                                                       "embedding_dimension": 384}]}}
    [vs] = parse_config(raw, "t", {}).registered_resources.vector_stores
    assert vs.vector_db_id == "docs"
    assert vs.embedding_dimension == 384


def test_resource_with_provider_id_resolving_empty_is_dropped_by_config_resources():
    raw = {"registered_resources": {"models": [
        {"model_id": "a", "provider_id": "${env.UNSET:+llama-cpp}"},
        {"model_id": "b", "provider_id": "llama-cpp"},
        {"model_id": "c"},
    ]}, **inference(LLAMA_CPP)}
    config = parse_config(raw, "t", {})
    resources, skipped = config_resources(config)
    assert [(path, r.identifier, r.provider_id) for path, r in resources] == [
        ("registered_resources.models[1]", "b", "llama-cpp"),
        ("registered_resources.models[2]", "c", ""),
    ]
    assert skipped == ["registered_resources.models[0]: provider_id resolved empty, entry disabled"]


def test_resource_bound_to_unsupported_provider_is_skipped_with_reason():
    raw = {"providers": {"inference": [LLAMA_CPP, {"provider_id": "odd", "provider_type": "remote::odd"}]},
           "registered_resources": {"models": [{"model_id": "m", "provider_id": "odd"},
                                               {"model_id": "n", "provider_id": "llama-cpp",
                                                "model_type": "embedding", "metadata": {"embedding_dimension": 8}}]}}
    resources, skipped = config_resources(parse_config(raw, "t", {}))
    assert [r.identifier for _, r in resources] == ["n"]
    assert resources[0][1].model.model_type == common_pb2.MODEL_TYPE_EMBEDDING
    assert resources[0][1].metadata["embedding_dimension"] == 8
    assert resources[0][1].source == common_pb2.RESOURCE_SOURCE_CONFIG
    assert len(skipped) == 1
    assert "registered_resources.models[0]" in skipped[0]
    assert "remote::odd" in skipped[0] and "not supported" in skipped[0]


def test_invalid_model_type():
    err = config_error({"registered_resources": {"models": [{"model_id": "m", "model_type": "chat"}]}})
    assert err.path == "registered_resources.models[0].model_type"


def test_legacy_top_level_models_list_is_accepted():
    raw = {"version": 2, **inference(LLAMA_CPP),
           "models": [{"model_id": "legacy", "provider_id": "llama-cpp", "model_type": "llm"}],
           "shields": []}
    config = parse_config(raw, "t", {})
    assert [m.model_id for m in config.registered_resources.models] == ["legacy"]
    resources, _ = config_resources(config)
    assert [r.identifier for _, r in resources] == ["legacy"]


def test_legacy_top_level_models_with_null_registered_resources():
    config = parse_config({"registered_resources": None, "models": [{"model_id": "m"}]}, "t", {})
    assert [m.model_id for m in config.registered_resources.models] == ["m"]


def test_null_sections_are_defaults():
    config = parse_config({"server": None, "mesh": None, "providers": None, "registered_resources": None},
                          "t", {})
    assert config.server.port == catalog.DEFAULT_PORTS["gateway"]
    assert config.providers == {}


# --- registry_db_path ------------------------------------------------------------------------------


def _storage(backend_type: str, db_path: str | None, metadata_backend: str = "kv_default") -> dict[str, Any]:
    backend: dict[str, Any] = {"type": backend_type}
    if db_path is not None:
        backend["db_path"] = db_path
    return {"backends": {"kv_default": backend, "other": {"type": "kv_sqlite", "db_path": "/other.db"}},
            "stores": {"metadata": {"namespace": "registry", "backend": metadata_backend}}}


def test_registry_db_path_follows_metadata_backend(tmp_path):
    config = parse_config({"storage": _storage("kv_sqlite", str(tmp_path / "kv.db"))}, "t", {})
    assert config.registry_db_path() == tmp_path / "kv.db"
    config = parse_config({"storage": _storage("kv_sqlite", str(tmp_path / "kv.db"), "other")}, "t", {})
    assert config.registry_db_path() == pathlib.Path("/other.db")


def test_registry_db_path_with_substituted_store_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    raw = {"storage": _storage("kv_sqlite", "${env.SQLITE_STORE_DIR:=~/.llama/distributions/x}/kvstore.db")}
    assert parse_config(raw, "t", {}).registry_db_path() == tmp_path / ".llama/distributions/x/kvstore.db"
    assert parse_config(raw, "t", {"SQLITE_STORE_DIR": "/srv/ls"}).registry_db_path() \
        == pathlib.Path("/srv/ls/kvstore.db")


def test_starter_registry_db_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_example(STARTER).registry_db_path() == tmp_path / ".llama/distributions/starter/kvstore.db"


def test_mesh_registry_db_overrides_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    raw = {"storage": _storage("kv_sqlite", "/from-storage.db"), "mesh": {"registry_db": "~/mesh.db"}}
    assert parse_config(raw, "t", {}).registry_db_path() == tmp_path / "mesh.db"


def test_registry_db_path_default_when_no_sqlite_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".stackmesh" / "mydistro" / "registry.db"
    for storage in (None, _storage("kv_postgres", None), _storage("kv_sqlite", None)):
        config = parse_config({"distro_name": "mydistro", "storage": storage}, "t", {})
        assert config.registry_db_path() == expected


# --- regressions: bugs found by these tests, fixed ------------------------------------------


def test_error_path_counts_disabled_providers():
    raw = inference({"provider_id": "${env.UNSET:+vllm}", "provider_type": "remote::vllm"},
                    {**LLAMA_CPP, "config": {"n_ctxx": 1}})
    assert config_error(raw).path == "providers.inference[1].config.n_ctxx"


def test_error_path_in_starter_points_at_the_file_entry():
    text = STARTER.read_text().replace(
        "  - provider_id: sentence-transformers\n    provider_type: inline::sentence-transformers\n",
        "  - provider_id: sentence-transformers\n    provider_type: inline::sentence-transformers\n"
        "    config:\n      batch_sizee: 4\n")
    assert "batch_sizee" in text
    err = config_error(yaml.safe_load(text))
    assert err.path == "providers.inference[15].config.batch_sizee"


@pytest.mark.parametrize(("raw", "path"), [
    ({"version": [1]}, "version"),
    (inference({"provider_id": "v", "provider_type": "remote::vllm", "config": {"tls_verify": [1]}}),
     "providers.inference[0].config.tls_verify"),
    (inference({"provider_id": "v", "provider_type": "remote::vllm",
                "config": {"network": {"timeout": "slow"}}}),
     "providers.inference[0].config.network.timeout"),
], ids=["version", "tls_verify", "network.timeout"])
def test_union_field_error_path_has_no_type_tag(raw, path):
    assert config_error(raw).path == path


def test_misspelled_resource_id_key_is_an_error():
    err = config_error({"registered_resources": {"models": [{"model_idx": "m"}]}})
    assert err.path.startswith("registered_resources.models[0]")


def test_vector_dbs_entry_with_vector_store_id_alias_is_kept():
    raw = {"registered_resources": {"vector_dbs": [{"vector_store_id": "docs", "embedding_model": "e"}]}}
    config = parse_config(raw, "t", {})
    assert [v.vector_db_id for v in config.registered_resources.vector_dbs] == ["docs"]


def test_legacy_models_error_path_names_the_file_key():
    err = config_error({"models": [{"model_id": "m", "model_type": "chat"}]})
    assert err.path == "models[0].model_type"


def test_model_bound_to_supported_provider_sharing_id_with_unsupported_one():
    raw = {"providers": {"inference": [{"provider_id": "openai", "provider_type": "remote::openai"}],
                         "safety": [{"provider_id": "openai", "provider_type": "inline::llama-guard"}]},
           "registered_resources": {"models": [{"model_id": "gpt-4o", "provider_id": "openai"}]}}
    resources, skipped = config_resources(parse_config(raw, "t", {}))
    assert [r.identifier for _, r in resources] == ["gpt-4o"]
    assert skipped == []
