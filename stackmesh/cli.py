"""The ``stackmesh`` command line. ``stackmesh --help`` lists every command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

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
    from stackmesh.client import RESOURCE_COLLECTIONS

    parser = argparse.ArgumentParser(prog="stackmesh", description="Run and call a stackmesh gRPC mesh.")
    parser.add_argument("--url", default=None, help="gateway address (default: $STACKMESH_URL or 127.0.0.1:50051)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("providers", help="configured providers and their health").add_subparsers(dest="op", required=True)
    q = p.add_parser("list")
    q.add_argument("--api")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_providers_list)

    for collection in RESOURCE_COLLECTIONS:
        group = sub.add_parser(collection, help=f"{collection}: list, get, unregister"
                               + (", register" if collection == "models" else ""))
        ops = group.add_subparsers(dest="op", required=True)
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
