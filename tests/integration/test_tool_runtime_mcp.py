"""The tool_runtime service in-process (with a real registry) against real MCP servers on 127.0.0.1:
the PyPI `mcp-server-time` over stdio, and tests/support/mcp_http_server.py over streamable HTTP and SSE."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from services.common.errors import error_info_from_rpc_error
from services.common.server import ServiceHost
from stackmesh.registry.v1 import registry_pb2 as rpb, registry_pb2_grpc as rgrpc
from stackmesh.tool_runtime.v1 import tool_runtime_pb2 as tpb, tool_runtime_pb2_grpc as tgrpc
from tests.conftest import make_config
from tests.support.mcp_http_server import MCPHTTPServer
from tests.support.mesh import free_port

TIME_COMMAND = [sys.executable, "-m", "mcp_server_time"]
PROVIDERS = {
    "inference": [],
    "tool_runtime": [
        {"provider_id": "rag-runtime", "provider_type": "inline::rag-runtime"},
        {"provider_id": "model-context-protocol", "provider_type": "remote::model-context-protocol",
         "config": {"connect_timeout_seconds": 20, "list_timeout_seconds": 10}},
    ],
}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def stdio_children(parent: int, needle: str) -> list[int]:
    """Live processes whose parent is ``parent`` and whose command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and needle in cmdline:
            found.append(int(entry))
    return found


class Runtime:
    def __init__(self, tools: tgrpc.ToolRuntimeServiceStub, groups: rgrpc.ToolGroupsServiceStub,
                 http: MCPHTTPServer, sse: MCPHTTPServer) -> None:
        self.tools, self.groups, self.http, self.sse = tools, groups, http, sse

    async def register(self, toolgroup_id: str, *, endpoint: str = "", command: list[str] | None = None,
                       provider_id: str = "model-context-protocol", args: dict[str, Any] | None = None) -> None:
        await self.groups.RegisterToolGroup(rpb.RegisterToolGroupRequest(
            toolgroup_id=toolgroup_id, provider_id=provider_id, mcp_endpoint=endpoint, mcp_command=command or [],
            args=struct(args or {})))

    async def unregister(self, toolgroup_id: str) -> None:
        await self.groups.UnregisterToolGroup(rpb.UnregisterToolGroupRequest(toolgroup_id=toolgroup_id))

    async def invoke(self, tool: str, arguments: dict[str, Any], toolgroup_id: str = "") -> tpb.InvokeToolResponse:
        return await self.tools.InvokeTool(tpb.InvokeToolRequest(tool_name=tool, arguments=struct(arguments),
                                                                 toolgroup_id=toolgroup_id), timeout=60)

    async def names(self, toolgroup_id: str = "") -> tuple[set[str], dict[str, str]]:
        reply = await self.tools.ListRuntimeTools(tpb.ListRuntimeToolsRequest(toolgroup_id=toolgroup_id), timeout=60)
        return {f"{t.toolgroup_id}/{t.name}" for t in reply.tools}, {e.toolgroup_id: e.message for e in reply.errors}


@pytest_asyncio.fixture(scope="module")
async def runtime(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tool-runtime")
    http = MCPHTTPServer(free_port(), directory).start()
    sse = MCPHTTPServer(free_port(), directory, transport="sse").start()
    from services.registry.app import build_registry
    from services.tool_runtime.app import build_tool_runtime

    registry_host = ServiceHost("registry", "127.0.0.1", 0, grace_seconds=0.5)
    await build_registry(make_config(directory, providers=PROVIDERS), registry_host)
    await registry_host.start(install_signal_handlers=False)
    await registry_host.set_serving(True)
    config = make_config(directory, providers=PROVIDERS,
                         mesh={"registry": {"target": f"127.0.0.1:{registry_host.port}"}})
    runtime_host = ServiceHost("tool_runtime", "127.0.0.1", 0, grace_seconds=0.5)
    await build_tool_runtime(config, runtime_host)
    await runtime_host.start(install_signal_handlers=False)
    await runtime_host.set_serving(True)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{runtime_host.port}"),
                grpc.aio.insecure_channel(f"127.0.0.1:{registry_host.port}")]
    yield Runtime(tgrpc.ToolRuntimeServiceStub(channels[0]), rgrpc.ToolGroupsServiceStub(channels[1]), http, sse)
    for channel in channels:
        await channel.close()
    await runtime_host.stop()
    await registry_host.stop()
    http.stop()
    sse.stop()


async def expect_error(coro, code: grpc.StatusCode) -> tuple[str, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro
    assert caught.value.code() == code, caught.value.details()
    info = error_info_from_rpc_error(caught.value)
    return caught.value.details(), info.reason if info else "", dict(info.metadata) if info else {}


async def test_http_group_lists_and_invokes(runtime):
    await runtime.register("mcp::calc", endpoint=runtime.http.url)
    names, errors = await runtime.names("mcp::calc")
    assert names == {"mcp::calc/add", "mcp::calc/echo", "mcp::calc/fail", "mcp::calc/crash"} and not errors
    reply = await runtime.invoke("add", {"a": 2, "b": 40}, "mcp::calc")
    assert not reply.is_error and reply.content[0].text == "42"
    assert reply.metadata["structured_content"]["result"] == 42


async def test_input_schema_is_the_servers(runtime):
    reply = await runtime.tools.ListRuntimeTools(tpb.ListRuntimeToolsRequest(toolgroup_id="mcp::calc"))
    add = next(t for t in reply.tools if t.name == "add")
    assert add.description == "Add two integers."
    assert add.input_schema["required"] == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"


async def test_sse_endpoint_works_too(runtime):
    await runtime.register("mcp::calc-sse", endpoint=runtime.sse.url)
    reply = await runtime.invoke("echo", {"text": "over sse"}, "mcp::calc-sse")
    assert not reply.is_error and reply.content[0].text == "over sse"
    await runtime.unregister("mcp::calc-sse")


async def test_tool_error_comes_back_as_a_result(runtime):
    reply = await runtime.invoke("fail", {}, "mcp::calc")
    assert reply.is_error and "boom: the fail tool always fails" in reply.error_message
    assert reply.metadata["error_type"] == "TOOL_ERROR"
    assert (await runtime.invoke("add", {"a": 1, "b": 1}, "mcp::calc")).content[0].text == "2"  # session intact


@pytest.mark.parametrize("arguments, field", [
    ({"a": "two", "b": 1}, "a"),
    ({"a": 1}, "b"),
    ({"a": 1.5, "b": 1}, "a"),
])
async def test_arguments_failing_the_schema_are_rejected_naming_the_field(runtime, arguments, field):
    message, reason, metadata = await expect_error(runtime.invoke("add", arguments, "mcp::calc"),
                                                   grpc.StatusCode.INVALID_ARGUMENT)
    assert reason == "INVALID_TOOL_ARGUMENTS" and metadata["field"] == field
    assert f"argument '{field}' of tool 'add'" in message


async def test_unknown_tool_and_unknown_group(runtime):
    message, reason, _ = await expect_error(runtime.invoke("no_such_tool", {}), grpc.StatusCode.NOT_FOUND)
    assert reason == "TOOL_NOT_FOUND" and "stackmesh tools list" in message
    message, _, _ = await expect_error(runtime.invoke("no_such_tool", {}, "mcp::calc"), grpc.StatusCode.NOT_FOUND)
    assert "mcp::calc" in message
    message, _, _ = await expect_error(runtime.invoke("add", {"a": 1, "b": 2}, "mcp::nope"), grpc.StatusCode.NOT_FOUND)
    assert "tool group 'mcp::nope' not found" in message and "stackmesh toolgroups list" in message
    await expect_error(runtime.names("mcp::nope"), grpc.StatusCode.NOT_FOUND)


async def test_tool_found_by_name_across_groups_and_ambiguity(runtime):
    reply = await runtime.invoke("echo", {"text": "hi"})  # only mcp::calc has echo
    assert reply.content[0].text == "hi"
    await runtime.register("mcp::calc2", endpoint=runtime.http.url)
    try:
        message, reason, metadata = await expect_error(runtime.invoke("echo", {"text": "hi"}),
                                                       grpc.StatusCode.FAILED_PRECONDITION)
        assert reason == "AMBIGUOUS_TOOL" and "toolgroup_id" in message
        assert metadata["candidates"] == "mcp::calc, mcp::calc2"
        assert (await runtime.invoke("echo", {"text": "x"}, "mcp::calc2")).content[0].text == "x"
        assert (await runtime.invoke("mcp::calc2/echo", {"text": "y"})).content[0].text == "y"
    finally:
        await runtime.unregister("mcp::calc2")


async def test_fan_out_lists_every_group_and_reports_the_failing_one(runtime):
    await runtime.register("mcp::down", endpoint=f"http://127.0.0.1:{free_port()}/mcp")
    await runtime.register("builtin::rag", provider_id="rag-runtime")
    try:
        names, errors = await runtime.names()
        assert {"mcp::calc/add", "builtin::rag/knowledge_search"} <= names
        assert set(errors) == {"mcp::down"} and "cannot list the tools" in errors["mcp::down"]
        # Listing that one group alone is an RPC error.
        message, reason, _ = await expect_error(runtime.names("mcp::down"), grpc.StatusCode.UNAVAILABLE)
        assert reason == "MCP_SERVER_UNAVAILABLE" and "mcp::down" in message
    finally:
        await runtime.unregister("mcp::down")
        await runtime.unregister("builtin::rag")


async def test_paging_through_tools(runtime):
    seen, token = [], ""
    while True:
        reply = await runtime.tools.ListRuntimeTools(tpb.ListRuntimeToolsRequest(page_size=1, page_token=token))
        seen.extend(f"{t.toolgroup_id}/{t.name}" for t in reply.tools)
        token = reply.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and {"mcp::calc/add", "mcp::calc/crash"} <= set(seen) and len(seen) == len(set(seen))


async def test_stdio_time_server(runtime):
    await runtime.register("mcp::time", command=TIME_COMMAND)
    names, _ = await runtime.names("mcp::time")
    assert names == {"mcp::time/get_current_time", "mcp::time/convert_time"}
    reply = await runtime.invoke("get_current_time", {"timezone": "Europe/Paris"})
    assert not reply.is_error, reply.error_message
    assert json.loads(reply.content[0].text)["timezone"] == "Europe/Paris"
    reply = await runtime.invoke("get_current_time", {"timezone": "Not/AZone"})
    assert reply.is_error and "Not/AZone" in reply.error_message  # the server's own error, as a result


async def test_unregistering_a_stdio_group_stops_its_server(runtime):
    await runtime.register("mcp::time2", command=[*TIME_COMMAND, "--local-timezone", "Europe/Paris"])
    assert not (await runtime.invoke("get_current_time", {"timezone": "UTC"}, "mcp::time2")).is_error
    assert len(stdio_children(os.getpid(), "--local-timezone")) == 1
    await runtime.unregister("mcp::time2")
    for _ in range(100):
        if not stdio_children(os.getpid(), "--local-timezone"):
            break
        await asyncio.sleep(0.1)
    assert not stdio_children(os.getpid(), "--local-timezone")


async def test_re_registering_a_group_elsewhere_drops_its_cached_tools(runtime):
    await runtime.register("mcp::moving", endpoint=runtime.http.url)
    assert "mcp::moving/add" in (await runtime.names("mcp::moving"))[0]
    await runtime.unregister("mcp::moving")
    await runtime.register("mcp::moving", command=TIME_COMMAND)
    assert (await runtime.names("mcp::moving"))[0] == {"mcp::moving/get_current_time", "mcp::moving/convert_time"}
    await runtime.unregister("mcp::moving")


async def test_server_dying_mid_call_is_a_clear_error_then_the_next_call_reconnects(runtime):
    reply = await runtime.invoke("crash", {}, "mcp::calc")
    assert reply.is_error and reply.metadata["error_type"] == "MCP_CONNECTION_LOST"
    assert "mcp::calc" in reply.error_message and "next call" in reply.error_message
    # Down: nothing can be sent, so this is a plain UNAVAILABLE naming the server.
    message, reason, _ = await expect_error(runtime.invoke("add", {"a": 1, "b": 2}, "mcp::calc"),
                                            grpc.StatusCode.UNAVAILABLE)
    assert reason == "MCP_SERVER_UNAVAILABLE" and runtime.http.url in message
    runtime.http.start()
    reply = await runtime.invoke("add", {"a": 1, "b": 2}, "mcp::calc")
    assert not reply.is_error and reply.content[0].text == "3"


async def test_a_stdio_command_that_cannot_start_is_a_failed_precondition(runtime):
    await runtime.register("mcp::broken", command=["no-such-mcp-server-program", "--stdio"])
    try:
        message, reason, _ = await expect_error(runtime.names("mcp::broken"), grpc.StatusCode.FAILED_PRECONDITION)
        assert reason == "MCP_COMMAND_FAILED" and "no-such-mcp-server-program" in message
        names, errors = await runtime.names()  # the fan-out still lists the others
        assert "mcp::calc/add" in names and "mcp::broken" in errors
    finally:
        await runtime.unregister("mcp::broken")
