"""One adapter for every OpenAI-compatible inference server and hosted API (``remote::*``).

Requests and responses already are OpenAI-shaped dicts, so the adapter forwards them: it sets
``model`` to the provider's model id, fills the configured default ``max_tokens``, POSTs to
``{base_url}/chat/completions`` (or ``/completions``, ``/embeddings``) and returns the JSON, or
yields the SSE chunks of a stream as they arrive. Its own work is the plumbing around that:

- one keep-alive ``aiohttp.ClientSession`` per provider (measured: aiohttp adds 0.4-2.5 ms per
  call where httpx adds 2.9-3.8 ms, see DEPENDENCIES.md), created lazily inside the running loop;
- HTTP and transport failures become stackmesh errors whose messages name the provider id and
  base URL and say what to do, and never contain the API key;
- ``health()`` reflects the last contact with the server.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
import string
import struct
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlsplit

import aiohttp

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StackmeshError,
    Unavailable,
    Unimplemented,
)
from services.inference.providers.base import DiscoveredModel, InferenceProvider, ModelTarget
from services.inference.providers.remote.openai_compat.config import OpenAICompatConfig

__all__ = ["OpenAICompatAdapter", "parse_sse_events"]

log = logging.getLogger(__name__)

_MAX_DETAIL_CHARS = 600
# A version segment (/v1, /v1beta, /v2/...) in the URL path: such a base_url is taken as given.
_VERSION_SEGMENT = re.compile(r"/v\d")


class OpenAICompatAdapter(InferenceProvider):
    """An inference provider backed by an OpenAI-compatible HTTP API."""

    config: OpenAICompatConfig

    def __init__(self, provider_id: str, config: OpenAICompatConfig | Mapping[str, Any] | None,
                 defaults: Mapping[str, Any] | None) -> None:
        if not isinstance(config, OpenAICompatConfig):
            config = OpenAICompatConfig.model_validate(dict(config or {}))
        super().__init__(provider_id, config, dict(defaults or {}))
        self._base_url, self._config_problem = self._resolve_base_url()
        self._session: aiohttp.ClientSession | None = None
        self._suffix_probed = False  # the base_url + "/v1" retry is tried once per provider
        self._last_contact: tuple[bool, str] | None = None  # None: not contacted yet
        token = config.api_key or config.access_token
        self._secret = token.get_secret_value() if token else ""

    # --- life cycle -------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Nothing to wait for: the session is opened on first use, the server checked later."""
        if self._config_problem:
            log.warning("%s", self._config_problem)

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def health(self) -> tuple[bool, str]:
        """(False, why) when unconfigured or after a failed contact; (True, "") after a success.

        Before any contact, one ``GET /models`` decides, so a provider whose server is down at
        startup is not reported healthy."""
        if self._config_problem:
            return False, self._config_problem
        if self._last_contact is None and self.defaults.get("lists_models", True):
            try:
                await self.list_models()
            except StackmeshError:
                pass  # list_models recorded the failure
        return self._last_contact or (True, "")

    # --- discovery --------------------------------------------------------------------------
    async def list_models(self) -> list[DiscoveredModel] | None:
        """The server's models (``GET /models``), filtered by allowed_models.

        None for APIs without a model list (Bedrock, Vertex AI): their models come from the
        run config. Every failure is raised as ``Unavailable`` (its reason keeps the cause)."""
        if not self.defaults.get("lists_models", True):
            return None
        try:
            self._require_configured()
            self._require_key_for_hosted_api()
            body = await self._request_json("GET", "/models", None)
            models = self._parse_model_list(body)
        except StackmeshError as err:
            self._record_contact(False, err.message)
            if isinstance(err, Unavailable):
                raise
            raise Unavailable(err.message, reason=err.reason, metadata=err.metadata) from None
        allowed = self.config.allowed_models
        if allowed is not None:
            models = [m for m in models if m.provider_model_id in allowed]
        return models

    # --- data path --------------------------------------------------------------------------
    async def chat_completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        body = self._request_body(model, request, stream=False)
        return await self._request_json("POST", "/chat/completions", body, model.provider_model_id)

    async def stream_chat_completion(self, model: ModelTarget,
                                     request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield each ``chat.completion.chunk`` dict as soon as its SSE event arrives."""
        body = self._request_body(model, request, stream=True)
        path = "/chat/completions"
        resp = await self._open("POST", path, body, stream=True, model_id=model.provider_model_id)
        finished = False
        try:
            async for data in parse_sse_events(resp.content):
                if data.strip() == "[DONE]":
                    return
                chunk = self._decode_chunk(data, path)
                finished = finished or any(c.get("finish_reason") for c in chunk.get("choices") or ())
                yield chunk
            if not finished:
                # The connection ended without [DONE] or a finish_reason: a cut answer, not an empty one.
                raise Unavailable(f"provider '{self.provider_id}' ({self._meta().get('base_url', '')}) ended the "
                                  f"stream before the answer was finished; retry the request",
                                  reason="STREAM_INTERRUPTED", metadata=self._meta())
        except (aiohttp.ClientError, TimeoutError) as err:
            raise self._transport_error(err, "POST", path) from None
        finally:
            resp.release()  # also when the consumer stops early: the connection is not reused

    async def completion(self, model: ModelTarget, request: dict[str, Any]) -> dict[str, Any]:
        body = self._request_body(model, request, stream=False)
        return await self._request_json("POST", "/completions", body, model.provider_model_id)

    async def embeddings(self, model: ModelTarget, inputs: list[str],
                         dimensions: int | None) -> dict[str, Any]:
        self._check_allowed(model)
        body: dict[str, Any] = {"model": model.provider_model_id, "input": list(inputs),
                                "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        raw = await self._request_json("POST", "/embeddings", body, model.provider_model_id)
        return self._normalize_embeddings(raw)

    # --- request building -------------------------------------------------------------------
    def _request_body(self, model: ModelTarget, request: Mapping[str, Any], *,
                      stream: bool) -> dict[str, Any]:
        """The outgoing body: the caller's fields, our model id, stream flag, default max_tokens."""
        self._check_allowed(model)
        # null means "unset" in the OpenAI API; dropping nulls spares servers that reject them.
        body = {k: v for k, v in request.items()
                if v is not None and k not in ("model", "stream", "stream_options")}
        body["model"] = model.provider_model_id
        if stream:
            body["stream"] = True
            if request.get("stream_options") is not None:
                body["stream_options"] = request["stream_options"]
        default_max = self.config.max_tokens
        if default_max and "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = default_max
        return body

    def _check_allowed(self, model: ModelTarget) -> None:
        allowed = self.config.allowed_models
        if allowed is not None and model.provider_model_id not in allowed:
            raise PermissionDenied(
                f"model '{model.provider_model_id}' is not in the allowed_models of inference "
                f"provider '{self.provider_id}' ({', '.join(allowed) or 'empty'}): add it there "
                f"or use another model", reason="MODEL_NOT_ALLOWED",
                metadata={"provider_id": self.provider_id, "model": model.provider_model_id})

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json",
                   "User-Agent": "stackmesh"}
        network = self.config.network
        if network is not None and network.headers:
            headers.update(network.headers)
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        return headers

    # --- base URL and configuration ---------------------------------------------------------
    def _resolve_base_url(self) -> tuple[str | None, str]:
        """(base URL, "") or (None, what to set): config first, else the family's default."""
        if self.config.base_url:
            return self.config.base_url, ""
        template = self.defaults.get("default_base_url")
        if not template:
            return None, (
                f"inference provider '{self.provider_id}' has no base_url: set base_url (Llama "
                f"Stack: url) in its config to the server's OpenAI-compatible URL, e.g. "
                f"http://HOST:PORT/v1")
        values = dict(self.defaults.get("template_defaults") or {})
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        for name in fields:
            value = getattr(self.config, name, None)
            if value:
                values[name] = value
        missing = [name for name in fields if not values.get(name)]
        if missing:
            return None, (
                f"inference provider '{self.provider_id}' cannot build its endpoint URL "
                f"{template}: set {', '.join(missing)} (or base_url) in its config")
        return template.format(**values).rstrip("/"), ""

    @property
    def base_url(self) -> str | None:
        """The base URL requests go to (after a successful /v1 retry, the one with /v1)."""
        return self._base_url

    def _require_configured(self) -> str:
        if self._base_url is None:
            raise Unavailable(self._config_problem, reason="PROVIDER_NOT_CONFIGURED",
                              metadata={"provider_id": self.provider_id})
        return self._base_url

    def _require_key_for_hosted_api(self) -> None:
        """A hosted API without a key fails anyway; say so without a network round trip."""
        hosted = self.config.base_url is None and self.defaults.get("default_base_url")
        if hosted and self.defaults.get("needs_api_key") and not self._secret:
            raise Unavailable(
                f"inference provider '{self.provider_id}' ({self._base_url}) needs an API key: "
                f"set api_key in its config (e.g. api_key: ${{env.MY_API_KEY}})",
                reason="PROVIDER_NO_API_KEY", metadata=self._meta())

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"provider_id": self.provider_id, "base_url": self._base_url or "", **extra}

    def _record_contact(self, ok: bool, reason: str) -> None:
        self._last_contact = (ok, "" if ok else reason)

    # --- HTTP -------------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        """The provider's one session, opened in the running loop on first use."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl_setting(), ttl_dns_cache=300,
                                             keepalive_timeout=60, limit=self.config.max_connections,
                                             limit_per_host=self.config.max_connections)
            # trust_env: honour HTTPS_PROXY/NO_PROXY like the openai SDK that Llama Stack uses.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=True)
        return self._session

    def _ssl_setting(self) -> ssl.SSLContext | bool:
        verify: Any = self.config.tls_verify
        network = self.config.network
        if network is not None and network.tls and "verify" in network.tls:
            verify = network.tls["verify"]
        if verify is False:
            return False
        if isinstance(verify, str):
            try:
                return ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as err:
                raise Unavailable(
                    f"inference provider '{self.provider_id}': cannot load the CA bundle "
                    f"tls_verify={verify!r} ({err}); fix the path or set tls_verify: true",
                    reason="PROVIDER_TLS", metadata=self._meta()) from None
        return True

    def _timeout(self, stream: bool) -> aiohttp.ClientTimeout:
        """Whole-answer timeout for plain calls; per-chunk timeout for streams."""
        seconds: float = self.config.timeout_seconds
        connect: float | None = None
        network = self.config.network
        if network is not None and isinstance(network.timeout, (int, float)):
            seconds = float(network.timeout)
        elif network is not None and isinstance(network.timeout, dict):
            connect = network.timeout.get("connect")
            seconds = network.timeout.get("read") or seconds
        # A dead host should fail fast even when answers may legitimately take minutes.
        connect = connect or min(seconds, 15.0)
        if stream:
            return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=seconds)
        return aiohttp.ClientTimeout(total=seconds, sock_connect=connect)

    async def _send(self, method: str, base: str, path: str, body: Any,
                    stream: bool) -> aiohttp.ClientResponse:
        network = self.config.network
        proxy = (network.proxy or {}).get("url") if network is not None else None
        try:
            return await self._http().request(
                method, base + path, json=body, headers=self._headers(stream),
                timeout=self._timeout(stream), proxy=proxy)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise self._transport_error(err, method, path, base) from None

    async def _open(self, method: str, path: str, body: Any, *, stream: bool = False,
                    model_id: str | None = None) -> aiohttp.ClientResponse:
        """Send; return a 2xx response (the caller releases it) or raise the mapped error.

        A base_url without a version path (e.g. TGI's http://host:8080) that answers 404 is
        retried once with /v1 appended; if that answers, it is kept for later calls."""
        base = self._require_configured()
        resp = await self._send(method, base, path, body, stream)
        if resp.status == 404 and self._should_try_suffix(base):
            self._suffix_probed = True
            alt = base + self.defaults.get("v1_suffix", "/v1")
            alt_resp = await self._send(method, alt, path, body, stream)
            if alt_resp.status != 404:
                log.info("provider %s: %s answered 404, using %s", self.provider_id, base, alt)
                resp.release()
                resp, base, self._base_url = alt_resp, alt, alt
            else:
                alt_resp.release()  # report the configured URL's own 404
        if resp.status >= 400:
            try:
                raise await self._status_error(resp, method, path, base, model_id)
            finally:
                resp.release()
        self._record_contact(True, "")
        return resp

    def _should_try_suffix(self, base: str) -> bool:
        return not self._suffix_probed and not _VERSION_SEGMENT.search(urlsplit(base).path)

    async def _request_json(self, method: str, path: str, body: Any,
                            model_id: str | None = None) -> Any:
        resp = await self._open(method, path, body, model_id=model_id)
        try:
            text = await resp.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as err:
            raise self._transport_error(err, method, path) from None
        finally:
            resp.release()
        try:
            payload = json.loads(text)
        except ValueError:
            raise Unavailable(
                f"inference provider '{self.provider_id}' ({self._base_url}): {method} {path} "
                f"answered with a body that is not JSON ({_clip(text, 200)!r}); check that "
                f"base_url is the server's OpenAI-compatible API (usually ending in /v1)",
                reason="PROVIDER_BAD_RESPONSE", metadata=self._meta(path=path)) from None
        if isinstance(payload, dict) and payload.get("error") and not payload.get("choices"):
            # Some servers answer 200 with an error object instead of an HTTP error status.
            raise Unavailable(f"inference provider '{self.provider_id}' ({self._base_url}): "
                              f"{method} {path} failed: {self._scrub(_error_text(payload))}",
                              reason="PROVIDER_ERROR", metadata=self._meta(path=path))
        return payload

    # --- error mapping ----------------------------------------------------------------------
    def _transport_error(self, err: BaseException, method: str, path: str,
                         base: str | None = None) -> StackmeshError:
        """Connection refused, DNS, TLS, timeout or a dropped connection -> Unavailable."""
        base = base or self._base_url or ""
        who = f"inference provider '{self.provider_id}' ({base})"
        if isinstance(err, TimeoutError):
            reason, message = "PROVIDER_TIMEOUT", (
                f"{who}: {method} {path} got no answer within {self._timeout(False).total:g} s; "
                f"check that the server is up and not overloaded, or raise timeout_seconds")
        elif isinstance(err, aiohttp.ClientSSLError):
            reason, message = "PROVIDER_TLS", (
                f"{who}: TLS failed ({err}); set tls_verify to the server's CA bundle path "
                f"(or false for a trusted test server)")
        elif isinstance(err, aiohttp.ClientConnectorError):
            reason, message = "PROVIDER_UNREACHABLE", (
                f"{who}: cannot connect ({err.os_error.strerror or err}); start the server or "
                f"fix base_url")
        else:
            reason, message = "PROVIDER_CONNECTION_LOST", (
                f"{who}: connection failed during {method} {path} ({type(err).__name__}: "
                f"{err}); check the server's logs and retry")
        message = self._scrub(message)
        self._record_contact(False, message)
        return Unavailable(message, reason=reason, metadata=self._meta(path=path))

    async def _status_error(self, resp: aiohttp.ClientResponse, method: str, path: str,
                            base: str, model_id: str | None) -> StackmeshError:
        """Map an HTTP error status to the stackmesh error a caller can act on."""
        status = resp.status
        detail = self._scrub(await _read_error_detail(resp))
        head = (f"inference provider '{self.provider_id}' ({base}): {method} {path} returned "
                f"HTTP {status}: {detail}")
        meta = self._meta(path=path, http_status=status)
        if status in (400, 413, 422) or (status == 500 and "validation error" in detail):
            # llama-cpp-python answers request validation errors with 500.
            return InvalidArgument(f"{head} — fix the request", reason="PROVIDER_REJECTED_REQUEST",
                                   metadata=meta)
        if status in (401, 403):
            hint = "an API key is set" if self._secret else "no API key is set"
            message = f"{head} — check the provider's api_key ({hint})"
            self._record_contact(False, message)
            return PermissionDenied(message, reason="PROVIDER_AUTH", metadata=meta)
        if status == 404:
            what = f"model '{model_id}' is served there" if model_id else "the route exists"
            return NotFound(f"{head} — check that {what} (GET {base}/models lists the models) and "
                            f"that base_url is the OpenAI-compatible API (usually .../v1)",
                            reason="PROVIDER_NOT_FOUND", metadata=meta)
        if status == 429:
            return Unavailable(f"{head} — rate limited; retry later",
                               reason="PROVIDER_RATE_LIMITED", metadata=meta)
        if status == 501:
            return Unimplemented(f"{head} — the server does not implement {path}",
                                 reason="PROVIDER_UNIMPLEMENTED", metadata=meta)
        if status >= 500:
            message = f"{head} — the server failed; check its logs and retry"
            if status in (502, 503, 504):
                # Down or overloaded. A plain 500 came from a running server (often a request
                # it cannot serve, e.g. embeddings on a chat-only llama.cpp): still healthy.
                self._record_contact(False, message)
            return Unavailable(message, reason="PROVIDER_SERVER_ERROR", metadata=meta)
        return InvalidArgument(head, reason="PROVIDER_REJECTED_REQUEST", metadata=meta)

    def _scrub(self, text: str) -> str:
        """Servers sometimes echo the credential back; it must not reach logs or callers."""
        return text.replace(self._secret, "***") if self._secret else text

    # --- response parsing -------------------------------------------------------------------
    def _decode_chunk(self, data: str, path: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise Unavailable(
                f"inference provider '{self.provider_id}' ({self._base_url}): POST {path} "
                f"streamed an event that is not JSON: {_clip(data, 200)!r}",
                reason="PROVIDER_BAD_RESPONSE", metadata=self._meta(path=path)) from None
        if not isinstance(chunk, dict) or (chunk.get("error") and not chunk.get("choices")):
            raise Unavailable(
                f"inference provider '{self.provider_id}' ({self._base_url}): the stream from "
                f"POST {path} failed: {self._scrub(_error_text(chunk))}",
                reason="PROVIDER_STREAM_ERROR", metadata=self._meta(path=path))
        return chunk

    def _parse_model_list(self, body: Any) -> list[DiscoveredModel]:
        entries = body.get("data") if isinstance(body, dict) else body
        if not isinstance(entries, list):
            raise Unavailable(
                f"inference provider '{self.provider_id}' ({self._base_url}): GET /models did "
                f"not return an OpenAI model list ({{\"data\": [...]}}); check base_url",
                reason="PROVIDER_BAD_RESPONSE", metadata=self._meta(path="/models"))
        return [_discovered_model(e) for e in entries if isinstance(e, dict) and e.get("id")]

    def _normalize_embeddings(self, raw: Any) -> dict[str, Any]:
        items = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise Unavailable(
                f"inference provider '{self.provider_id}' ({self._base_url}): POST /embeddings "
                f"did not return {{\"data\": [...]}}", reason="PROVIDER_BAD_RESPONSE",
                metadata=self._meta(path="/embeddings"))
        ordered = sorted(items, key=lambda item: item.get("index", 0))
        vectors = [item.get("embedding") for item in ordered]
        if any(isinstance(v, list) and v and isinstance(v[0], list) for v in vectors):
            # llama-cpp-python does this for a model without pooling (any chat model).
            raise FailedPrecondition(
                f"inference provider '{self.provider_id}' ({self._base_url}): POST /embeddings "
                f"returned one vector per token instead of one per input: the served model has "
                f"no pooling; serve an embedding model (with mean/CLS pooling) for embeddings",
                reason="PROVIDER_BAD_RESPONSE", metadata=self._meta(path="/embeddings"))
        data = [{"index": i, "embedding": _embedding_vector(v)} for i, v in enumerate(vectors)]
        usage = raw.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        return {"data": data, "model": raw.get("model"),
                "usage": {"prompt_tokens": prompt,
                          "total_tokens": int(usage.get("total_tokens") or prompt)}}


# --- module helpers ---------------------------------------------------------------------------
async def parse_sse_events(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Yield the ``data`` of each server-sent event as soon as its terminating blank line arrives.

    Reads whatever bytes are available (no fixed-size line buffer: a chunk carrying a long tool
    call must not hit aiohttp's line-length limit), accepts LF and CRLF line ends, skips comments
    (``: ping``) and fields other than ``data``, and joins multi-line data with newlines."""
    pending = b""
    data_lines: list[str] = []
    async for piece in content.iter_any():
        pending += piece
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if data_lines:
                    yield "\n".join(data_lines)
                    data_lines = []
                continue
            field, _, value = line.partition(":")
            if field == "data":
                data_lines.append(value[1:] if value.startswith(" ") else value)
    tail = pending.rstrip(b"\r").decode("utf-8", errors="replace")
    if tail.startswith("data:"):
        data_lines.append(tail[5:].lstrip(" "))
    if data_lines:
        yield "\n".join(data_lines)


def _discovered_model(entry: Mapping[str, Any]) -> DiscoveredModel:
    """An OpenAI model-list entry as a DiscoveredModel; the type only when the entry says so."""
    model_id = str(entry["id"])
    declared = " ".join(str(entry.get(k) or "") for k in ("type", "task", "model_type")).lower()
    lowered = model_id.lower()
    if "rerank" in declared or "rerank" in lowered:
        model_type = "rerank"
    elif "embed" in declared or "embed" in lowered:
        model_type = "embedding"
    else:
        model_type = "llm"
    metadata = {k: v for k, v in entry.items()
                if k not in ("id", "object") and isinstance(v, (str, int, float, bool))}
    return DiscoveredModel(provider_model_id=model_id, model_type=model_type, metadata=metadata)


def _embedding_vector(value: Any) -> list[float]:
    """Floats as given, or decoded from base64 little-endian float32 (encoding_format=base64)."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(x) for x in value or []]


async def _read_error_detail(resp: aiohttp.ClientResponse) -> str:
    """The server's error message: OpenAI's {"error": {"message"}}, FastAPI's detail, or text."""
    try:
        text = await resp.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError):
        return resp.reason or "no details"
    try:
        return _clip(_error_text(json.loads(text)), _MAX_DETAIL_CHARS)
    except ValueError:
        return _clip(text.strip() or resp.reason or "no details", _MAX_DETAIL_CHARS)


def _error_text(payload: Any) -> str:
    if isinstance(payload, dict):
        for key in ("error", "detail", "message"):
            value = payload.get(key)
            if isinstance(value, dict) and value.get("message"):
                return str(value["message"])
            if isinstance(value, str) and value:
                return value
            if value:
                return json.dumps(value, separators=(",", ":"))[:_MAX_DETAIL_CHARS]
    return json.dumps(payload)[:_MAX_DETAIL_CHARS]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
