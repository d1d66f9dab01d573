"""``stackmesh run``: starts everything in order, reports a child that dies, stops all on Ctrl-C."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from stackmesh.client import StackmeshClient
from tests.support.mesh import free_port, write_config

pytestmark = pytest.mark.slow
ROOT = pathlib.Path(__file__).resolve().parents[2]
STARTER = ROOT / "tests" / "fixtures" / "llama-stack-0.4.5" / "starter-config.yaml"


class Run:
    def __init__(self, config: pathlib.Path, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stackmesh.cli", "run", str(config)], cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))

    def pids(self) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for line in self.lines
                for m in [re.search(r"(\w+) is healthy at \S+ \(pid (\d+)\)", line)] if m}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_starts_in_order_reports_a_dead_child_and_stops_everything(tmp_path):
    ports = {"registry": free_port(), "inference": free_port(), "gateway": free_port()}
    config = write_config(tmp_path, ports=ports)
    run = Run(config)
    try:
        run.wait_for(r"stackmesh is up\. Gateway: 127\.0\.0\.1:%d" % ports["gateway"])
        order = [name for line in run.lines for name in re.findall(r"launcher \| (\w+) is healthy", line)]
        assert order == ["registry", "inference", "gateway"]
        assert any(line.lstrip().startswith("registry |") for line in run.lines)  # prefixed child logs
        with StackmeshClient(f"127.0.0.1:{ports['gateway']}") as sm:
            assert {p.provider_id for p in sm.providers()} == {"llama-cpp", "sentence-transformers"}
        pids = run.pids()
        os.kill(pids["inference"], signal.SIGKILL)
        run.wait_for(r"inference exited unexpectedly with code -9")
        assert run.process.poll() is None and alive(pids["gateway"]) and alive(pids["registry"])
        run.process.send_signal(signal.SIGINT)  # Ctrl-C
        assert run.process.wait(30) == 0
        assert not any(alive(pid) for pid in pids.values())
    finally:
        if run.process.poll() is None:  # the children get SIGTERM when the launcher dies (PDEATHSIG)
            run.process.kill()


def test_run_on_an_unmodified_llama_stack_starter_config_starts_what_it_can(tmp_path):
    config = tmp_path / "starter.yaml"
    shutil.copy(STARTER, config)  # byte for byte: nothing edited
    run = Run(config, env={"SQLITE_STORE_DIR": str(tmp_path / "store")})
    try:
        run.wait_for(r"stackmesh is up\. Gateway: \S+:8321", timeout=240)
        assert any("not started: datasetio provider 'huggingface' (remote::huggingface)" in line for line in run.lines)
        started = {name for line in run.lines for name in re.findall(r"launcher \| (\w+) is healthy", line)}
        assert {"safety", "datasetio", "scoring", "eval"} <= started
        with StackmeshClient("127.0.0.1:8321") as sm:
            providers = {(p.api, p.provider_id): p for p in sm.providers()}
            assert providers[("inference", "sentence-transformers")].provider_type == "inline::sentence-transformers"
            assert providers[("datasetio", "huggingface")].health == 4  # UNSUPPORTED, listed by name
            assert providers[("safety", "llama-guard")].provider_type == "inline::llama-guard"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not sm.list("models"):
                time.sleep(0.2)
            assert len(sm.embed("all-MiniLM-L6-v2", ["hello"])[0]) == 384
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(30) == 0
    finally:
        if run.process.poll() is None:  # the children get SIGTERM when the launcher dies (PDEATHSIG)
            run.process.kill()
