"""The ``stackmesh`` command line. ``stackmesh --help`` lists every command."""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main"]

_HEALTH = {0: "unspecified", 1: "healthy", 2: "UNHEALTHY", 3: "unknown", 4: "unsupported"}
_MODEL_TYPES = {0: "-", 1: "llm", 2: "embedding", 3: "rerank"}
_SOURCES = {0: "-", 1: "registered", 2: "config", 3: "discovered"}


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    for row in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def _client(args: argparse.Namespace):
    from stackmesh.client import StackmeshClient

    return StackmeshClient(args.url)


def cmd_providers_list(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        providers = sm.providers(args.api or "")
    if args.json:
        print(json.dumps([sm.to_dict(p) for p in providers], indent=2))
        return
    _table([[p.provider_id, p.provider_type, p.api, _HEALTH.get(p.health, "?"), p.health_message]
            for p in providers], ["PROVIDER", "TYPE", "API", "HEALTH", "DETAIL"])


def cmd_resources_list(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        resources = sm.list(args.collection, args.provider or "")
    if args.json:
        print(json.dumps([sm.to_dict(r) for r in resources], indent=2))
        return
    rows = []
    for r in resources:
        extra = _MODEL_TYPES[r.model.model_type] if r.WhichOneof("spec") == "model" else (r.WhichOneof("spec") or "")
        rows.append([r.identifier, r.provider_id, r.provider_resource_id, extra, _SOURCES.get(r.source, "?")])
    _table(rows, ["IDENTIFIER", "PROVIDER", "PROVIDER_ID", "TYPE", "SOURCE"])


def cmd_resources_get(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        print(json.dumps(sm.to_dict(sm.get(args.collection, args.id)), indent=2))


def cmd_resources_unregister(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        sm.unregister(args.collection, args.id)
    print(f"unregistered {args.id}")


def cmd_models_register(args: argparse.Namespace) -> None:
    try:
        metadata = json.loads(args.metadata) if args.metadata else {}
    except json.JSONDecodeError as err:
        sys.exit(f"--metadata is not valid JSON: {err}")
    with _client(args) as sm:
        model = sm.register_model(args.model_id, provider_id=args.provider or "",
                                  provider_model_id=args.provider_model_id or "", model_type=args.type,
                                  metadata=metadata)
        print(json.dumps(sm.to_dict(model), indent=2))


def cmd_vector_dbs_register(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        vector_db = sm.register_vector_db(args.vector_db_id, args.embedding_model, provider_id=args.provider or "",
                                          embedding_dimension=args.dimension or 0)
        print(json.dumps(sm.to_dict(vector_db), indent=2))


def cmd_toolgroups_register(args: argparse.Namespace) -> None:
    import shlex

    if bool(args.mcp_command) == bool(args.mcp_endpoint):
        sys.exit("give exactly one of --mcp-command or --mcp-endpoint")
    with _client(args) as sm:
        provider = args.provider
        if not provider:  # an MCP server: the MCP provider, even when rag-runtime is configured too
            mcp = [p.provider_id for p in sm.providers("tool_runtime")
                   if p.provider_type == "remote::model-context-protocol"]
            provider = mcp[0] if len(mcp) == 1 else ""
        group = sm.register_tool_group(args.toolgroup_id, provider_id=provider,
                                       mcp_endpoint=args.mcp_endpoint or "",
                                       mcp_command=shlex.split(args.mcp_command) if args.mcp_command else None)
        print(json.dumps(sm.to_dict(group), indent=2))


_MIME_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".pdf": "application/pdf"}


def _documents(paths: list[str]) -> list[dict[str, str]]:
    """.txt, .md and .pdf files under the given files/directories, sent inline as data: URIs so
    the tool_runtime service needs no access to this machine's files (compose, Kubernetes)."""
    import base64
    import pathlib

    found: list[pathlib.Path] = []
    for raw in paths:
        path = pathlib.Path(raw).expanduser().resolve()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in _MIME_TYPES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            sys.exit(f"{raw}: no such file or directory")
    if not found:
        sys.exit("no .txt, .md or .pdf files found")
    documents = []
    for p in found:
        mime = _MIME_TYPES.get(p.suffix.lower(), "text/plain")
        data = base64.b64encode(p.read_bytes()).decode()
        documents.append({"document_id": p.name, "uri": f"data:{mime};base64,{data}", "mime_type": mime})
    return documents


def cmd_rag_insert(args: argparse.Namespace) -> None:
    documents = _documents(args.paths)
    inserted = chunks = 0
    with _client(args) as sm:
        for start in range(0, len(documents), 64):  # batches stay far below the 64 MiB message limit
            reply = sm.insert_documents(args.vector_db_id, documents[start:start + 64],
                                        chunk_size_in_tokens=args.chunk_size or 0,
                                        chunk_overlap_in_tokens=args.chunk_overlap or 0)
            inserted, chunks = inserted + reply.documents, chunks + reply.chunks
    print(f"inserted {inserted} documents as {chunks} chunks into {args.vector_db_id}")


def cmd_rag_query(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        reply = sm.knowledge_search(args.query, [args.vector_db_id, *args.also], max_chunks=args.max_chunks,
                                    mode=args.mode)
    if args.json:
        print(json.dumps(sm.to_dict(reply), indent=2))
        return
    for i, citation in enumerate(reply.citations, 1):
        text = " ".join(citation.text.split())
        print(f"{i}. score {citation.score:.3f}  {citation.document_id} ({citation.vector_db_id})\n   {text[:300]}")


def cmd_tools_list(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        reply = sm.list_tools(args.group or "")
    if args.json:
        print(json.dumps(sm.to_dict(reply), indent=2))
        return
    _table([[t.toolgroup_id, t.name, t.description.splitlines()[0] if t.description else ""] for t in reply.tools],
           ["GROUP", "TOOL", "DESCRIPTION"])
    for error in reply.errors:
        print(f"warning: tool group {error.toolgroup_id} could not be listed: {error.message}", file=sys.stderr)


def cmd_tools_invoke(args: argparse.Namespace) -> None:
    try:
        arguments = json.loads(args.arguments) if args.arguments else {}
    except json.JSONDecodeError as err:
        sys.exit(f"arguments are not valid JSON: {err}")
    with _client(args) as sm:
        reply = sm.invoke_tool(args.tool, arguments, toolgroup_id=args.group or "")
    for content in reply.content:
        print(content.text)
    if reply.is_error:
        print(f"tool error: {reply.error_message}", file=sys.stderr)
        sys.exit(1)


def cmd_chat(args: argparse.Namespace) -> None:
    kwargs = {"system": args.system, "max_tokens": args.max_tokens, "temperature": args.temperature}
    with _client(args) as sm:
        if args.no_stream:
            print(sm.chat(args.model, args.prompt, **kwargs))
            return
        for piece in sm.stream_chat(args.model, args.prompt, **kwargs):
            print(piece, end="", flush=True)
        print()


def cmd_embed(args: argparse.Namespace) -> None:
    with _client(args) as sm:
        vectors = sm.embed(args.model, args.text)
    if args.json:
        print(json.dumps(vectors))
        return
    for text, vector in zip(args.text, vectors):
        head = ", ".join(f"{x:.4f}" for x in vector[:6])
        print(f"{text!r}: dimension {len(vector)} [{head}, ...]")


def cmd_config_check(args: argparse.Namespace) -> None:
    from services.common.config import load_config
    from stackmesh.config_check import check_report

    report = check_report(load_config(args.path))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"config {report['config']} is valid ({report['name']})")
    print(f"would start: {', '.join(report['processes'])} (gateway on port {report['gateway_port']})")
    for api, providers in report["providers"].items():
        print(f"  {api}: {', '.join(providers)}")
    if report["unsupported"]:
        print(f"not supported by stackmesh ({len(report['unsupported'])} providers, skipped):")
        for u in report["unsupported"]:
            print(f"  {u['api']}: {u['provider_type']} (provider_id {u['provider_id']}) - {u['reason']}")
    for line in report["disabled"]:
        print(f"disabled: {line}")
    for line in report["resources_skipped"]:
        print(f"resource skipped: {line}")
    if report["resources"]:
        print(f"resources from the config: {', '.join(report['resources'])}")


def cmd_run(args: argparse.Namespace) -> None:
    import asyncio

    from services.common.config import DEFAULT_CONFIG_PATH, load_config
    from stackmesh.launcher import launch

    path = os.path.abspath(args.config or os.environ.get("STACKMESH_CONFIG") or DEFAULT_CONFIG_PATH)
    config = load_config(path)
    sys.exit(asyncio.run(launch(config, path)))


def cmd_serve(args: argparse.Namespace) -> None:
    from services.common.runner import run_service

    argv = [*(["--config", args.config] if args.config else []), *(["--port", str(args.port)] if args.port is not None else []),
            *(["--host", args.host] if args.host else [])]
    run_service(args.service, argv)


def _parser() -> argparse.ArgumentParser:
    from stackmesh.cli_evaluation import add_commands as add_evaluation_commands
    from stackmesh.cli_training import add_commands as add_training_commands
    from stackmesh.client import RESOURCE_COLLECTIONS

    parser = argparse.ArgumentParser(prog="stackmesh", description="Run and call a stackmesh gRPC mesh.")
    parser.add_argument("--url", default=None, help="gateway address (default: $STACKMESH_URL or 127.0.0.1:50051)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("providers", help="configured providers and their health").add_subparsers(dest="op", required=True)
    q = p.add_parser("list")
    q.add_argument("--api")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_providers_list)

    ops_by_collection = {}
    for collection in RESOURCE_COLLECTIONS:
        group = sub.add_parser(collection, help=f"{collection}: list, get, unregister, register"
                               + (", rows, append" if collection == "datasets" else ""))
        ops = ops_by_collection[collection] = group.add_subparsers(dest="op", required=True)
        q = ops.add_parser("list")
        q.add_argument("--provider")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_resources_list, collection=collection)
        q = ops.add_parser("get")
        q.add_argument("id")
        q.set_defaults(func=cmd_resources_get, collection=collection)
        q = ops.add_parser("unregister")
        q.add_argument("id")
        q.set_defaults(func=cmd_resources_unregister, collection=collection)
        if collection == "models":
            q = ops.add_parser("register")
            q.add_argument("model_id")
            q.add_argument("--provider", help="provider_id (optional when only one provider can serve it)")
            q.add_argument("--provider-model-id")
            q.add_argument("--type", choices=["llm", "embedding", "rerank"], default="llm")
            q.add_argument("--metadata", help='JSON, e.g. \'{"embedding_dimension": 384}\'')
            q.set_defaults(func=cmd_models_register)
        if collection == "vector-dbs":
            q = ops.add_parser("register")
            q.add_argument("vector_db_id")
            q.add_argument("--embedding-model", required=True, help="an embedding model; its dimension is used")
            q.add_argument("--provider", help="vector_io provider_id (optional when only one)")
            q.add_argument("--dimension", type=int, help="must equal the model's dimension if given")
            q.set_defaults(func=cmd_vector_dbs_register)
        if collection == "toolgroups":
            q = ops.add_parser("register")
            q.add_argument("toolgroup_id")
            q.add_argument("--mcp-command", help='a stdio MCP server, e.g. "python -m mcp_server_time"')
            q.add_argument("--mcp-endpoint", help="a streamable HTTP MCP endpoint, e.g. http://127.0.0.1:8000/mcp")
            q.add_argument("--provider", help="tool_runtime provider_id (optional when only one)")
            q.set_defaults(func=cmd_toolgroups_register)

    add_evaluation_commands(sub, ops_by_collection)
    add_training_commands(sub)

    rag = sub.add_parser("rag", help="insert documents into and query a vector DB").add_subparsers(dest="op", required=True)
    q = rag.add_parser("insert")
    q.add_argument("vector_db_id")
    q.add_argument("paths", nargs="+", help=".txt, .md, .pdf files or directories")
    q.add_argument("--chunk-size", type=int, help="tokens per chunk (default 512)")
    q.add_argument("--chunk-overlap", type=int, help="tokens of overlap (default 128)")
    q.set_defaults(func=cmd_rag_insert)
    q = rag.add_parser("query")
    q.add_argument("vector_db_id")
    q.add_argument("query")
    q.add_argument("--also", nargs="*", default=[], help="more vector DBs to search")
    q.add_argument("--max-chunks", type=int, default=5)
    q.add_argument("--mode", choices=["vector", "keyword", "hybrid"], default="vector")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_rag_query)

    tools = sub.add_parser("tools", help="list and invoke tools").add_subparsers(dest="op", required=True)
    q = tools.add_parser("list")
    q.add_argument("--group")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_tools_list)
    q = tools.add_parser("invoke")
    q.add_argument("tool")
    q.add_argument("arguments", nargs="?", help="JSON object")
    q.add_argument("--group")
    q.set_defaults(func=cmd_tools_invoke)

    q = sub.add_parser("chat", help="chat with a model (streams tokens)")
    q.add_argument("model")
    q.add_argument("prompt")
    q.add_argument("--system")
    q.add_argument("--max-tokens", type=int, default=None)
    q.add_argument("--temperature", type=float, default=None)
    q.add_argument("--no-stream", action="store_true")
    q.set_defaults(func=cmd_chat)

    q = sub.add_parser("embed", help="embed texts")
    q.add_argument("model")
    q.add_argument("text", nargs="+")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_embed)

    c = sub.add_parser("config", help="check a run config").add_subparsers(dest="op", required=True)
    q = c.add_parser("check")
    q.add_argument("path")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_config_check)

    q = sub.add_parser("run", help="start the whole mesh as local processes")
    q.add_argument("config", nargs="?")
    q.set_defaults(func=cmd_run)

    q = sub.add_parser("serve", help="run one service (what a container runs)")
    from services.common.runner import SERVICE_BUILDERS

    q.add_argument("service", choices=list(SERVICE_BUILDERS))
    q.add_argument("--config")
    q.add_argument("--host")
    q.add_argument("--port", type=int)
    q.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    from services.common.errors import StackmeshError
    from stackmesh.client import StackmeshClientError

    try:
        args.func(args)
    except StackmeshClientError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except StackmeshError as err:
        print(f"error: {err.message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
