"""Config of every ``remote::*`` OpenAI-compatible inference provider.

One class serves all families so that Llama Stack 0.4.5 run configs validate unchanged: the
keys its providers use (``url``, ``api_token``, ``region_name``, ``api_version``, ...) are all
accepted, under their Llama Stack names. Values may arrive as ``None`` after ``${env.X:=}``
substitution, so every optional field accepts ``None`` and fields with a default fall back to it.
A missing ``base_url`` is not a config error: the provider reports itself unhealthy at run time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["OpenAICompatConfig", "NetworkSettings"]

# Older Llama Stack names of the same setting, in order of precedence after the canonical one.
_ALIASES: dict[str, tuple[str, ...]] = {
    "base_url": ("url", "api_base", "openai_compat_api_base"),
    "api_key": ("api_token", "auth_credential"),
    "timeout_seconds": ("timeout",),
}
# Fields with a non-None default: an explicit None (an empty env var) means "use the default".
_NONE_MEANS_DEFAULT = ("tls_verify", "refresh_models", "timeout_seconds")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class NetworkSettings(BaseModel):
    """Llama Stack's ``network`` block (newer run configs); honoured where aiohttp allows."""

    model_config = ConfigDict(extra="forbid")

    tls: dict[str, Any] | None = Field(
        default=None, description="TLS settings; `verify` (bool or CA bundle path) overrides "
                                  "tls_verify. Other keys are accepted and ignored.")
    proxy: dict[str, Any] | None = Field(
        default=None, description="Proxy settings; `url` is used as the HTTP(S) proxy. The "
                                  "HTTPS_PROXY/NO_PROXY environment variables also apply.")
    timeout: float | dict[str, float | None] | None = Field(
        default=None, description="Seconds for a whole request, or {connect, read}; overrides "
                                  "timeout_seconds.")
    headers: dict[str, str] | None = Field(
        default=None, description="Extra HTTP headers sent with every request.")


class OpenAICompatConfig(BaseModel):
    """Settings of one OpenAI-compatible server or hosted API (all ``remote::*`` families)."""

    # hide_input_in_errors: a validation error must never print the api_key it was given.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL, ending in the API version (e.g. "
                    "http://localhost:8000/v1). Also accepted as `url` (Llama Stack). Unset: the "
                    "family's default URL; families without one are unhealthy until it is set.")
    api_key: SecretStr | None = Field(
        default=None,
        description="Sent as `Authorization: Bearer <api_key>`. Also accepted as `api_token` "
                    "(Llama Stack's vLLM/Databricks/RunPod key). Never logged or shown in errors.")
    tls_verify: bool | str = Field(
        default=True,
        description="Verify the server's TLS certificate: true, false, or a CA bundle file path.")
    max_tokens: int | None = Field(
        default=None, ge=1,
        description="max_tokens sent when a request sets neither max_tokens nor "
                    "max_completion_tokens. Unset: the server's own default.")
    refresh_models: bool = Field(
        default=False,
        description="Re-list the server's models periodically (for servers whose models change).")
    refresh_interval_seconds: float | None = Field(
        default=None, gt=0,
        description="Seconds between model refreshes when refresh_models is on; unset: the mesh "
                    "default.")
    allowed_models: list[str] | None = Field(
        default=None,
        description="Only these provider model ids are listed and served; unset: all.")
    timeout_seconds: float = Field(
        default=120.0, gt=0,
        description="Seconds to wait for a whole non-streaming answer, or between two chunks of "
                    "a stream. Also accepted as `timeout` (Llama Stack).")
    max_connections: int = Field(
        default=1024, ge=1,
        description="Requests one replica may have in flight to the server at once (aiohttp's own "
                    "default of 100 would cap a replica below what vLLM can batch).")
    network: NetworkSettings | None = Field(
        default=None, description="Llama Stack's network block: tls, proxy, timeout, headers.")
    # --- keys Llama Stack 0.4.5 run configs put on these providers -----------------------------
    region_name: str | None = Field(
        default=None,
        description="remote::bedrock: AWS region of the endpoint (default us-east-2).")
    project: str | None = Field(
        default=None,
        description="remote::vertexai: Google Cloud project id (fills the endpoint URL); "
                    "remote::gemini: quota project for access-token auth (not sent).")
    location: str | None = Field(
        default=None, description="remote::vertexai: region of the endpoint (default us-central1).")
    access_token: SecretStr | None = Field(
        default=None,
        description="remote::gemini / remote::vertexai: OAuth2 access token, used as the bearer "
                    "token when api_key is unset.")
    api_version: str | None = Field(
        default=None,
        description="remote::azure: accepted for compatibility; unused (the /openai/v1 routes "
                    "take no api-version).")
    api_type: str | None = Field(
        default=None, description="remote::azure: accepted for compatibility; unused.")
    project_id: str | None = Field(
        default=None, description="remote::watsonx: project id; accepted for compatibility, "
                                  "unused by the OpenAI-compatible route.")
    append_api_version: bool | None = Field(
        default=None,
        description="remote::nvidia (older configs): accepted for compatibility; base_url is used "
                    "as given, with /v1 tried once if it answers 404.")

    @model_validator(mode="before")
    @classmethod
    def _fold_aliases(cls, data: Any) -> Any:
        """Map Llama Stack's key names onto ours; refuse two different values for one setting."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for field, aliases in _ALIASES.items():
            given = {k: data.pop(k) for k in (field, *aliases) if k in data}
            values = {k: v for k, v in given.items() if v is not None}
            distinct = {_plain(v) for v in values.values()}
            if len(distinct) > 1:
                raise ValueError(f"{' and '.join(values)} are the same setting ({field}); give "
                                 f"only one")
            if values:
                data[field] = next(iter(values.values()))
            elif given:
                data[field] = None
        for field in _NONE_MEANS_DEFAULT:
            if field in data and data[field] is None:
                del data[field]
        return data

    @field_validator("tls_verify", mode="before")
    @classmethod
    def _tls_words(cls, value: Any) -> Any:
        """'true'/'false' typed by hand stay booleans, not a CA bundle path named 'true'."""
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_base_url(cls, value: str | None) -> str | None:
        """Trailing slashes would double up when paths are appended; blank means unset."""
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if value and "://" not in value:
            raise ValueError(f"'{value}' is not a URL: write it with its scheme, "
                             f"e.g. http://{value}")
        return value or None


def _plain(value: Any) -> Any:
    """Comparable form of a config value: secrets unwrapped, URLs without a trailing slash."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value.strip().rstrip("/") if isinstance(value, str) else value
