"""``stackmesh config check``: the report and the command line."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from services.common.config import load_config, parse_config
from stackmesh.config_check import check_report

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "llama-stack-0.4.5"
STARTER = EXAMPLES / "starter-config.yaml"
OPEN_BENCHMARK = EXAMPLES / "open-benchmark-config.yaml"

STARTER_UNSUPPORTED = [
    "inline::meta-reference", "inline::torchtune-cpu", "inline::localfs",  # agents, post_training, files
    "remote::huggingface", "inline::braintrust",
    "remote::brave-search", "remote::tavily-search", "inline::reference",
]


def clean_environ(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    """os.environ without any variable the examples reference, HOME in tmp_path."""
    names = set()
    for path in EXAMPLES.glob("*.yaml"):
        names |= set(re.findall(r"\$\{env\.([A-Za-z0-9_]+)", path.read_text()))
    env = {k: v for k, v in os.environ.items() if k not in names and k != "STACKMESH_CONFIG"}
    env["HOME"] = str(tmp_path)
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stackmesh.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def starter_report(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config(yaml.safe_load(STARTER.read_text()), str(STARTER), {})
    return check_report(config)


# --- check_report ---------------------------------------------------------------------------------


def test_report_processes(starter_report):
    assert starter_report["processes"] == ["registry", "inference", "safety", "vector_io", "datasetio", "scoring", "eval",
                                          "tool_runtime", "gateway"]
    assert starter_report["gateway_port"] == 8321
    assert starter_report["name"] == "starter"
    assert starter_report["config"] == str(STARTER)


def test_report_unsupported_provider_types(starter_report):
    types = [u["provider_type"] for u in starter_report["unsupported"]]
    assert sorted(set(types)) == sorted(STARTER_UNSUPPORTED)
    hub = next(u for u in starter_report["unsupported"] if u["provider_type"] == "remote::huggingface")
    assert hub == {"api": "datasetio", "provider_id": "huggingface", "provider_type": "remote::huggingface",
                   "reason": hub["reason"]}
    assert "datasetio" in hub["reason"] and "inline::localfs" in hub["reason"]
    agents = next(u for u in starter_report["unsupported"] if u["api"] == "agents")
    assert "does not serve the 'agents' API" in agents["reason"]


def test_report_runnable_providers(starter_report):
    assert list(starter_report["providers"]) == ["inference", "safety", "vector_io", "datasetio", "scoring", "eval", "tool_runtime"]
    assert "faiss (inline::faiss)" in starter_report["providers"]["vector_io"]
    inference = starter_report["providers"]["inference"]
    assert "sentence-transformers (inline::sentence-transformers)" in inference
    assert "openai (remote::openai)" in inference
    assert not any("vllm" in p for p in inference)


def test_report_apis_not_served_disabled_and_resources(starter_report, tmp_path):
    assert {"agents", "batches", "files"} <= set(starter_report["apis_not_served"])
    assert "inference" not in starter_report["apis_not_served"]
    assert "providers.inference[2] (remote::vllm)" in starter_report["disabled"]
    skipped = starter_report["resources_skipped"]
    assert "registered_resources.shields[0]: provider_id resolved empty, entry disabled" in skipped
    assert any(s.startswith("registered_resources.tool_groups[0]") and "remote::tavily-search" in s
               for s in skipped)
    assert starter_report["resources"] == ["tool group 'builtin::rag'"]  # rag-runtime is served
    assert starter_report["registry_db"] == str(tmp_path / ".llama/distributions/starter/kvstore.db")


def test_report_is_json_serialisable(starter_report):
    assert json.loads(json.dumps(starter_report)) == starter_report


def test_report_with_vllm_enabled(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config(yaml.safe_load(STARTER.read_text()), str(STARTER), {"VLLM_URL": "http://v:8000/v1"})
    report = check_report(config)
    assert "vllm (remote::vllm)" in report["providers"]["inference"]
    assert "providers.inference[2] (remote::vllm)" not in report["disabled"]


def test_report_lists_config_resources(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    report = check_report(parse_config(yaml.safe_load(OPEN_BENCHMARK.read_text()), str(OPEN_BENCHMARK), {}))
    assert "model 'gpt-4o'" in report["resources"]
    assert "dataset 'simpleqa'" in report["resources"]


def test_report_without_runnable_inference_starts_no_inference_process(tmp_path):
    raw = {"providers": {"inference": [{"provider_id": "x", "provider_type": "remote::nope"}]},
           "mesh": {"registry_db": str(tmp_path / "r.db")}}
    report = check_report(parse_config(raw, "t", {}))
    assert report["processes"] == ["registry", "gateway"]
    assert report["providers"] == {}
    assert [u["provider_type"] for u in report["unsupported"]] == ["remote::nope"]
    assert report["registry_db"] == str(tmp_path / "r.db")


def test_report_from_load_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "run.yaml"
    path.write_text("distro_name: d\nproviders:\n  inference:\n  - provider_id: llama-cpp\n"
                    "    provider_type: inline::llama-cpp\nserver:\n  port: 9000\n")
    report = check_report(load_config(path))
    assert report["processes"] == ["registry", "inference", "gateway"]
    assert report["providers"] == {"inference": ["llama-cpp (inline::llama-cpp)"]}
    assert report["gateway_port"] == 9000
    assert report["unsupported"] == []


# --- the command line --------------------------------------------------------------------------------


def test_cli_check_starter(tmp_path):
    result = run_cli("config", "check", str(STARTER), env=clean_environ(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"config {STARTER} is valid (starter)" in out
    assert ("would start: registry, inference, safety, vector_io, datasetio, scoring, eval, tool_runtime, gateway "
            "(gateway on port 8321)") in out
    for provider_type in STARTER_UNSUPPORTED:
        assert provider_type in out
    assert "remote::huggingface (provider_id huggingface)" in out
    assert "disabled: providers.inference[2] (remote::vllm)" in out


def test_cli_check_starter_json(tmp_path):
    result = run_cli("config", "check", str(STARTER), "--json",
                     env=clean_environ(tmp_path, VLLM_URL="http://v:8000/v1"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["processes"] == ["registry", "inference", "safety", "vector_io", "datasetio", "scoring", "eval",
                                          "tool_runtime", "gateway"]
    assert "vllm (remote::vllm)" in report["providers"]["inference"]
    assert {u["provider_type"] for u in report["unsupported"]} == set(STARTER_UNSUPPORTED)


def test_cli_check_broken_config_prints_key_path(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("providers:\n  inference:\n  - provider_id: llama-cpp\n    provider_type: inline::llama-cpp\n"
                    "    config:\n      n_ctxx: 4096\n")
    result = run_cli("config", "check", str(path), env=clean_environ(tmp_path))
    assert result.returncode != 0
    assert "providers.inference[0].config.n_ctxx" in result.stderr
    assert "unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_check_missing_env_var_prints_key_path(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("providers:\n  inference:\n  - provider_id: v\n    provider_type: remote::vllm\n"
                    "    config:\n      base_url: ${env.STACKMESH_TEST_UNSET_URL}\n")
    result = run_cli("config", "check", str(path), env=clean_environ(tmp_path))
    assert result.returncode != 0
    assert "providers.inference[0].config.base_url" in result.stderr
    assert "STACKMESH_TEST_UNSET_URL" in result.stderr


def test_cli_check_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run_cli("config", "check", str(missing), env=clean_environ(tmp_path))
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr
