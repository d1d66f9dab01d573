"""MCP tool groups through the gateway, every part a real process on 127.0.0.1: registry, gateway,
the tool_runtime service, the PyPI `mcp-server-time` over stdio (started by the service) and the test
MCP server over streamable HTTP. Called the way a user's gRPC client calls them."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import time
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from services.common.errors import error_info_from_rpc_error
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc as rgrpc
from stackmesh.tool_runtime.v1 import tool_runtime_pb2 as tpb, tool_runtime_pb2_grpc as tgrpc
from tests.support.mcp_http_server import MCPHTTPServer
from tests.support.mesh import LocalMesh, free_port

pytestmark = pytest.mark.slow

MCP = "model-context-protocol"
PROVIDERS = {
    "tool_runtime": [
        {"provider_id": "rag-runtime", "provider_type": "inline::rag-runtime"},
        {"provider_id": MCP, "provider_type": "remote::model-context-protocol"},
    ],
}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def children(parent: int, needle: str) -> list[int]:
    """Live child processes of ``parent`` whose command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[1]) == parent and stat[0] != "Z" and needle in cmdline:
            found.append(int(entry))
    return found


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


class Client:
    """The gateway, as a user's gRPC client sees it."""

    def __init__(self, url: str) -> None:
        self.channel = grpc.insecure_channel(url)
        self.tools = tgrpc.ToolRuntimeServiceStub(self.channel)
        self.groups = rgrpc.ToolGroupsServiceStub(self.channel)

    def register(self, toolgroup_id: str, *, endpoint: str = "", command: list[str] | None = None) -> None:
        self.groups.RegisterToolGroup(rpb.RegisterToolGroupRequest(
            toolgroup_id=toolgroup_id, provider_id=MCP, mcp_endpoint=endpoint, mcp_command=command or []), timeout=30)

    def invoke(self, tool: str, arguments: dict[str, Any], toolgroup_id: str = "") -> tpb.InvokeToolResponse:
        return self.tools.InvokeTool(tpb.InvokeToolRequest(tool_name=tool, arguments=struct(arguments),
                                                           toolgroup_id=toolgroup_id), timeout=60)

    def list(self, toolgroup_id: str = "") -> tpb.ListRuntimeToolsResponse:
        return self.tools.ListRuntimeTools(tpb.ListRuntimeToolsRequest(toolgroup_id=toolgroup_id), timeout=60)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with LocalMesh(tmp_path_factory.mktemp("mcp-mesh"), providers=PROVIDERS) as running:
        yield running


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    server = MCPHTTPServer(free_port(), tmp_path_factory.mktemp("mcp-http")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(mesh, http_server):
    client = Client(mesh.url)
    client.register("mcp::time", command=[sys.executable, "-m", "mcp_server_time"])
    client.register("mcp::calc", endpoint=http_server.url)
    yield client
    client.channel.close()


def runtime_pid(mesh) -> int:
    return mesh.services["tool_runtime"].process.pid


def expect_error(call, code: grpc.StatusCode) -> tuple[str, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    info = error_info_from_rpc_error(caught.value)
    assert info is not None, "the ErrorInfo must survive the gateway"
    return caught.value.details(), info.reason, dict(info.metadata)


def test_fan_out_lists_the_tools_of_every_group(client):
    reply = client.list()
    names = {(t.toolgroup_id, t.name) for t in reply.tools}
    assert {("mcp::time", "get_current_time"), ("mcp::time", "convert_time"), ("mcp::calc", "add"),
            ("mcp::calc", "fail")} <= names
    assert not reply.errors
    schema = next(t for t in reply.tools if t.name == "get_current_time").input_schema
    assert schema["required"] == ["timezone"]


def test_get_current_time_in_paris_over_stdio(client):
    reply = client.invoke("get_current_time", {"timezone": "Europe/Paris"})
    assert not reply.is_error, reply.error_message
    answer = json.loads(reply.content[0].text)
    assert answer["timezone"] == "Europe/Paris" and answer["datetime"][-6:] in ("+01:00", "+02:00")


def test_killed_stdio_server_is_a_clear_error_then_the_next_call_recovers(mesh, client):
    assert not client.invoke("get_current_time", {"timezone": "UTC"}).is_error
    (pid,) = children(runtime_pid(mesh), "mcp_server_time")
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: pid not in children(runtime_pid(mesh), "mcp_server_time"))
    reply = client.invoke("get_current_time", {"timezone": "UTC"})
    assert reply.is_error and reply.metadata["error_type"] == "MCP_CONNECTION_LOST"
    assert "mcp::time" in reply.error_message and "mcp_server_time" in reply.error_message
    assert "next call" in reply.error_message
    reply = client.invoke("get_current_time", {"timezone": "Asia/Tokyo"})
    assert not reply.is_error, reply.error_message
    assert json.loads(reply.content[0].text)["timezone"] == "Asia/Tokyo"
    (new_pid,) = children(runtime_pid(mesh), "mcp_server_time")
    assert new_pid != pid


def test_http_server_invoke_and_tool_error(client):
    reply = client.invoke("add", {"a": 19, "b": 23})
    assert not reply.is_error and reply.content[0].text == "42"
    reply = client.invoke("fail", {}, "mcp::calc")
    assert reply.is_error and "boom" in reply.error_message


def test_killed_http_server_is_a_clear_error_and_a_restarted_one_recovers(client, http_server):
    assert client.invoke("add", {"a": 1, "b": 1}).content[0].text == "2"
    http_server.kill()
    reply = client.invoke("add", {"a": 1, "b": 2})
    assert reply.is_error and reply.metadata["error_type"] == "MCP_CONNECTION_LOST"
    assert http_server.url in reply.error_message
    # While it is down, nothing can be sent: UNAVAILABLE naming the server (the gateway's retries included).
    message, reason, _ = expect_error(lambda: client.invoke("add", {"a": 1, "b": 2}, "mcp::calc"),
                                      grpc.StatusCode.UNAVAILABLE)
    assert reason == "MCP_SERVER_UNAVAILABLE" and http_server.url in message
    http_server.start()
    reply = client.invoke("add", {"a": 1, "b": 2})
    assert not reply.is_error and reply.content[0].text == "3"


def test_bad_input_gets_the_right_status_through_the_gateway(client):
    message, reason, _ = expect_error(lambda: client.invoke("get_the_weather", {}), grpc.StatusCode.NOT_FOUND)
    assert reason == "TOOL_NOT_FOUND" and "`stackmesh tools list`" in message
    message, reason, metadata = expect_error(lambda: client.invoke("get_current_time", {"timezone": 3}),
                                             grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "INVALID_TOOL_ARGUMENTS" and metadata["field"] == "timezone" and "'timezone'" in message
    message, reason, metadata = expect_error(lambda: client.invoke("convert_time", {"time": "10:00"}),
                                             grpc.StatusCode.INVALID_ARGUMENT)
    assert metadata["field"] == "source_timezone"
    message, reason, _ = expect_error(lambda: client.invoke("add", {"a": 1, "b": 2}, "mcp::nope"),
                                      grpc.StatusCode.NOT_FOUND)
    assert "tool group 'mcp::nope' not found" in message
    expect_error(lambda: client.list("mcp::nope"), grpc.StatusCode.NOT_FOUND)


def test_python_in_a_command_is_the_services_interpreter(client):
    client.register("mcp::time-py", command=["python", "-m", "mcp_server_time", "--local-timezone", "UTC"])
    try:
        reply = client.invoke("convert_time", {"source_timezone": "Europe/Paris", "time": "12:00",
                                               "target_timezone": "Asia/Tokyo"}, "mcp::time-py")
        assert not reply.is_error, reply.error_message
        assert json.loads(reply.content[0].text)["target"]["timezone"] == "Asia/Tokyo"
    finally:
        client.groups.UnregisterToolGroup(rpb.UnregisterToolGroupRequest(toolgroup_id="mcp::time-py"), timeout=30)


def test_restarted_service_resumes_from_the_registry(mesh, client):
    service = mesh.services["tool_runtime"]
    assert not client.invoke("get_current_time", {"timezone": "UTC"}).is_error
    old_pid = runtime_pid(mesh)
    assert children(old_pid, "mcp_server_time")
    assert service.stop() == 0  # graceful: its stdio servers are stopped with it
    assert wait_for(lambda: not children(old_pid, "mcp_server_time"))
    service.start()

    def answers() -> tpb.InvokeToolResponse | None:
        try:  # the gateway's channel may still be backing off from the restart: UNAVAILABLE meanwhile
            return client.invoke("get_current_time", {"timezone": "Europe/Paris"})
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
            return None

    assert wait_for(answers, timeout=30)
    reply = answers()
    assert reply is not None and not reply.is_error, reply
    assert {t.toolgroup_id for t in client.list().tools} >= {"mcp::time", "mcp::calc"}
