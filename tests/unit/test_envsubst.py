"""``${env.X}`` substitution: Llama Stack's operators, conversions, ``~`` and disabled providers."""

from __future__ import annotations

import pytest
import yaml

from services.common.envsubst import DISABLED, convert_scalar, substitute
from services.common.errors import ConfigError

# --- the three operators, each with the variable set, set-but-empty and unset ----------------

SET = {"X": "hello"}
EMPTY = {"X": ""}
UNSET: dict[str, str] = {}


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        # ${env.X}
        ("${env.X}", SET, "hello"),
        # ${env.X:=default}
        ("${env.X:=fallback}", SET, "hello"),
        ("${env.X:=fallback}", EMPTY, "fallback"),
        ("${env.X:=fallback}", UNSET, "fallback"),
        ("${env.X:=}", SET, "hello"),
        ("${env.X:=}", EMPTY, None),
        ("${env.X:=}", UNSET, None),
        # ${env.X:+value}
        ("${env.X:+on}", SET, "on"),
        ("${env.X:+on}", EMPTY, None),
        ("${env.X:+on}", UNSET, None),
        ("${env.X:+}", SET, None),
    ],
    ids=lambda v: repr(v),
)
def test_operators(text, env, expected):
    assert substitute(text, "key", env) == expected


@pytest.mark.parametrize("env", [EMPTY, UNSET], ids=["set-but-empty", "unset"])
def test_required_variable_missing_raises_with_key_path(env):
    raw = {"providers": {"inference": [
        {"provider_id": "vllm", "provider_type": "remote::vllm", "config": {"base_url": "${env.X}"}},
    ]}}
    with pytest.raises(ConfigError) as info:
        substitute(raw, "", env)
    assert info.value.path == "providers.inference[0].config.base_url"
    assert "X" in info.value.message
    assert "providers.inference[0].config.base_url" in str(info.value)


def test_required_variable_error_path_for_nested_list_index():
    raw = {"a": {"b": ["ok", {"c": "${env.MISSING_VAR}"}]}}
    with pytest.raises(ConfigError) as info:
        substitute(raw, "", {})
    assert info.value.path == "a.b[1].c"
    assert "MISSING_VAR" in info.value.message


def test_error_path_keeps_file_index_after_a_disabled_provider():
    # The disabled entry at [0] is dropped, but the error names the entry's index in the file.
    raw = {"providers": {"inference": [
        {"provider_id": "${env.OFF:+off}", "provider_type": "remote::vllm", "config": {}},
        {"provider_id": "on", "provider_type": "remote::vllm", "config": {"base_url": "${env.NEEDED}"}},
    ]}}
    with pytest.raises(ConfigError) as info:
        substitute(raw, "", {})
    assert info.value.path == "providers.inference[1].config.base_url"


def test_substitute_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("STACKMESH_TEST_VAR", "from-os")
    monkeypatch.delenv("STACKMESH_TEST_UNSET", raising=False)
    assert substitute("${env.STACKMESH_TEST_VAR}") == "from-os"
    with pytest.raises(ConfigError):
        substitute("${env.STACKMESH_TEST_UNSET}", "k")


def test_explicit_env_mapping_wins_over_os_environ(monkeypatch):
    monkeypatch.setenv("STACKMESH_TEST_VAR", "from-os")
    assert substitute("${env.STACKMESH_TEST_VAR:=dflt}", "k", {}) == "dflt"


# --- conversions, only where a substitution happened ----------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("42", 42),
        ("-7", -7),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("yes", "yes"),
    ],
)
def test_convert_scalar(value, expected):
    result = convert_scalar(value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${env.V}", {"V": "true"}, True),
        ("${env.V}", {"V": "FALSE"}, False),
        ("${env.V}", {"V": "42"}, 42),
        ("${env.V}", {"V": "0.5"}, 0.5),
        ("${env.V:=4096}", {}, 4096),
        ("${env.V:=true}", {}, True),
        ("${env.V:=0.25}", {}, 0.25),
        ("${env.V:+8080}", {"V": "x"}, 8080),
        ("${env.V:=}", {}, None),
        ("${env.V}", {"V": "plain"}, "plain"),
    ],
)
def test_substituted_values_are_converted(text, env, expected):
    result = substitute(text, "k", env)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("literal", ["true", "false", "42", "0.5", "", "True"])
def test_literal_strings_without_substitution_are_not_converted(literal):
    result = substitute(literal, "k", {})
    assert result == literal
    assert type(result) is str


def test_yaml_types_are_kept_as_yaml_parsed_them():
    raw = yaml.safe_load(
        "a: true\n"
        "b: 'true'\n"
        "c: 42\n"
        "d: '42'\n"
        "e: 0.5\n"
        "f: '0.5'\n"
        "g: null\n"
        "h: ''\n"
        "i: ${env.N:=42}\n"
    )
    out = substitute(raw, "", {})
    assert out["a"] is True
    assert out["b"] == "true" and isinstance(out["b"], str)
    assert out["c"] == 42 and isinstance(out["c"], int)
    assert out["d"] == "42" and isinstance(out["d"], str)
    assert out["e"] == 0.5
    assert out["f"] == "0.5" and isinstance(out["f"], str)
    assert out["g"] is None
    assert out["h"] == ""
    assert out["i"] == 42 and isinstance(out["i"], int)


def test_non_string_scalars_pass_through():
    assert substitute(7, "k", {}) == 7
    assert substitute(None, "k", {}) is None
    assert substitute(False, "k", {}) is False
    assert substitute(1.5, "k", {}) == 1.5


def test_input_is_not_mutated():
    raw = {"a": ["${env.X:=1}"], "b": {"c": "${env.X:=2}"}}
    substitute(raw, "", {})
    assert raw == {"a": ["${env.X:=1}"], "b": {"c": "${env.X:=2}"}}


# --- several substitutions in one string ------------------------------------------------------


def test_several_substitutions_in_one_string():
    env = {"HOST": "example.com", "PORT": "8000"}
    assert substitute("http://${env.HOST}:${env.PORT}/v1", "k", env) == "http://example.com:8000/v1"


def test_several_substitutions_mixing_operators():
    text = "${env.SCHEME:=http}://${env.HOST}:${env.PORT:=80}${env.TLS:+/secure}"
    assert substitute(text, "k", {"HOST": "h"}) == "http://h:80"
    assert substitute(text, "k", {"HOST": "h", "SCHEME": "https", "PORT": "443", "TLS": "1"}) \
        == "https://h:443/secure"


def test_several_substitutions_are_converted_as_a_whole():
    assert substitute("${env.A}${env.B}", "k", {"A": "1", "B": "2"}) == 12
    assert substitute("${env.A:=}${env.B:=}", "k", {}) is None
    assert substitute("${env.A}.${env.B}", "k", {"A": "1", "B": "5"}) == 1.5


def test_one_missing_required_variable_among_several_raises():
    with pytest.raises(ConfigError) as info:
        substitute("${env.A}-${env.B}", "server.host", {"A": "x"})
    assert info.value.path == "server.host"
    assert "B" in info.value.message


def test_text_around_a_substitution_is_kept():
    assert substitute("prefix-${env.X}-suffix", "k", {"X": "mid"}) == "prefix-mid-suffix"
    assert substitute("no vars here ${notenv.X}", "k", {}) == "no vars here ${notenv.X}"


# --- ~ expansion --------------------------------------------------------------------------------


def test_tilde_in_default_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert substitute("${env.DIR:=~/.llama/x}/kv.db", "k", {}) == f"{tmp_path}/.llama/x/kv.db"


def test_tilde_in_variable_value_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert substitute("${env.DIR}", "k", {"DIR": "~/data"}) == f"{tmp_path}/data"
    assert substitute("${env.DIR:+~/on}", "k", {"DIR": "1"}) == f"{tmp_path}/on"


def test_literal_tilde_without_substitution_is_not_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert substitute("~/.llama/x", "k", {}) == "~/.llama/x"


def test_tilde_not_at_start_of_value_is_not_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert substitute("${env.DIR:=a~b}", "k", {}) == "a~b"


# --- disabled providers ------------------------------------------------------------------------


def _providers(provider_id, config):
    return {"providers": {"inference": [
        {"provider_id": provider_id, "provider_type": "remote::vllm", "config": config},
        {"provider_id": "kept", "provider_type": "remote::openai", "config": {"api_key": "${env.KEY:=}"}},
    ]}}


@pytest.mark.parametrize("provider_id", ["${env.UNSET:+x}", DISABLED, "${env.UNSET:=__disabled__}",
                                         "${env.UNSET:=}", None],
                         ids=["conditional-empty", "__disabled__", "default-__disabled__",
                              "default-empty", "null"])
def test_disabled_provider_config_is_not_expanded(provider_id):
    skipped: list[str] = []
    out = substitute(_providers(provider_id, {"base_url": "${env.UNSET_REQUIRED}"}), "", {}, skipped)
    entries = out["providers"]["inference"]
    assert [e["provider_id"] for e in entries] == ["kept"]
    assert entries[0]["config"] == {"api_key": None}
    assert skipped == ["providers.inference[0] (remote::vllm)"]


def test_disabled_provider_without_skipped_list_does_not_raise():
    out = substitute(_providers("${env.UNSET:+x}", {"base_url": "${env.UNSET_REQUIRED}"}), "", {})
    assert len(out["providers"]["inference"]) == 1


def test_conditional_provider_enabled_when_variable_set():
    skipped: list[str] = []
    env = {"VLLM_URL": "http://v:8000/v1"}
    raw = _providers("${env.VLLM_URL:+vllm}", {"base_url": "${env.VLLM_URL}"})
    out = substitute(raw, "", env, skipped)
    entries = out["providers"]["inference"]
    assert [e["provider_id"] for e in entries] == ["vllm", "kept"]
    assert entries[0]["config"]["base_url"] == "http://v:8000/v1"
    assert skipped == []


def test_enabled_provider_with_missing_required_variable_raises():
    raw = _providers("${env.VLLM_URL:+vllm}", {"base_url": "${env.UNSET_REQUIRED}"})
    with pytest.raises(ConfigError) as info:
        substitute(raw, "", {"VLLM_URL": "x"})
    assert info.value.path == "providers.inference[0].config.base_url"


def test_provider_id_with_missing_required_variable_raises_at_provider_id():
    raw = _providers("${env.UNSET_ID}", {})
    with pytest.raises(ConfigError) as info:
        substitute(raw, "", {})
    assert info.value.path == "providers.inference[0].provider_id"


def test_entries_without_provider_type_are_never_dropped_by_substitution():
    # Registered resources carry provider_id but no provider_type: they are kept here (with the
    # provider_id resolved to None) and dropped later by config_resources.
    raw = {"registered_resources": {"models": [{"model_id": "m", "provider_id": "${env.UNSET:+p}"}]}}
    out = substitute(raw, "", {})
    assert out["registered_resources"]["models"] == [{"model_id": "m", "provider_id": None}]
