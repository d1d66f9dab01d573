"""``python -m services.tool_runtime``: the tool_runtime service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("tool_runtime")
