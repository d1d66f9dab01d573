"""The OpenAI-compatible provider types stackmesh serves with one adapter, and their defaults.

``REMOTE_FAMILIES[provider_type]`` is the ``defaults`` dict the adapter receives. Every entry has:

- ``default_base_url``: the OpenAI-compatible base URL (ending in the API version, e.g. ``/v1``)
  used when the config gives none; ``None`` when the server is the user's own (vLLM, TGI, ...).
  It may be a template over config fields, e.g. ``{region_name}`` for Bedrock.
- ``description``: one line for ``stackmesh providers list`` and docs.
- ``needs_api_key``: whether the hosted API rejects requests without a key.

and may have:

- ``template_defaults``: values for template fields the config leaves unset (Llama Stack's own
  defaults, e.g. Bedrock's ``us-east-2``).
- ``lists_models``: ``False`` when the API has no ``GET /models`` (models must be registered in
  the run config); default ``True``.
- ``v1_suffix``: what to append when a ``base_url`` without a version path answers 404 (Azure's
  resource URL needs ``/openai/v1``); default ``/v1``.

Default URLs are the ones Llama Stack's adapters use (``providers/remote/inference/*``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["REMOTE_FAMILIES", "family_defaults"]


def _family(default_base_url: str | None, description: str, needs_api_key: bool,
            **extra: Any) -> dict[str, Any]:
    return {"default_base_url": default_base_url, "description": description,
            "needs_api_key": needs_api_key, **extra}


REMOTE_FAMILIES: dict[str, dict[str, Any]] = {
    "remote::openai": _family(
        "https://api.openai.com/v1", "OpenAI's hosted API.", True),
    "remote::vllm": _family(
        None, "A vLLM server (`vllm serve`); base_url is http://HOST:PORT/v1.", False),
    "remote::ollama": _family(
        "http://localhost:11434/v1", "An Ollama server through its OpenAI-compatible API.", False),
    "remote::llama-cpp-server": _family(
        "http://localhost:8080/v1",
        "A llama.cpp server (llama-server or `python -m llama_cpp.server`).", False),
    "remote::tgi": _family(
        None, "Hugging Face Text Generation Inference; its OpenAI routes live under <url>/v1.",
        False),
    "remote::fireworks": _family(
        "https://api.fireworks.ai/inference/v1", "Fireworks AI's hosted API.", True),
    "remote::together": _family(
        "https://api.together.xyz/v1", "Together AI's hosted API.", True),
    "remote::groq": _family(
        "https://api.groq.com/openai/v1", "Groq's hosted API.", True),
    "remote::sambanova": _family(
        "https://api.sambanova.ai/v1", "SambaNova Cloud's hosted API.", True),
    "remote::cerebras": _family(
        "https://api.cerebras.ai/v1", "Cerebras Cloud's hosted API.", True),
    "remote::nvidia": _family(
        "https://integrate.api.nvidia.com/v1",
        "NVIDIA NIM: the hosted API catalog, or a self-hosted NIM (set base_url).", False),
    "remote::gemini": _family(
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "Google Gemini through its OpenAI-compatible endpoint.", True),
    "remote::vertexai": _family(
        "https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}"
        "/endpoints/openapi",
        "Google Vertex AI through its OpenAI-compatible endpoint; needs `project` and an OAuth "
        "access token (api_key or access_token, e.g. `gcloud auth print-access-token`).",
        True, template_defaults={"location": "us-central1"}, lists_models=False),
    "remote::anthropic": _family(
        "https://api.anthropic.com/v1",
        "Anthropic Claude through its OpenAI SDK compatibility endpoint.", True),
    "remote::azure": _family(
        None, "Azure OpenAI; base_url is https://RESOURCE.openai.azure.com/openai/v1.", True,
        v1_suffix="/openai/v1"),
    "remote::databricks": _family(
        None, "Databricks model serving; base_url is https://WORKSPACE/serving-endpoints.", True),
    "remote::runpod": _family(
        None, "A RunPod endpoint's OpenAI-compatible URL "
              "(https://api.runpod.ai/v2/ENDPOINT_ID/openai/v1).", True),
    "remote::watsonx": _family(
        None, "IBM watsonx.ai through an OpenAI-compatible gateway URL you set (the native "
              "watsonx API is not OpenAI-compatible).", True),
    "remote::passthrough": _family(
        None, "Any OpenAI-compatible server or gateway, passed through unchanged.", False),
    "remote::bedrock": _family(
        "https://bedrock-runtime.{region_name}.amazonaws.com/openai/v1",
        "Amazon Bedrock's OpenAI-compatible endpoint (Bedrock API key as api_key).", True,
        template_defaults={"region_name": "us-east-2"}, lists_models=False),
    "remote::llama-openai-compat": _family(
        "https://api.llama.com/compat/v1", "Meta's Llama API through its OpenAI-compatible "
                                            "endpoint.", True),
}


def family_defaults(provider_type: str) -> dict[str, Any]:
    """The family dict for ``provider_type`` (a copy); KeyError names the known types."""
    try:
        return dict(REMOTE_FAMILIES[provider_type])
    except KeyError:
        known = ", ".join(sorted(REMOTE_FAMILIES))
        raise KeyError(f"'{provider_type}' is not an OpenAI-compatible family (known: {known})") \
            from None
