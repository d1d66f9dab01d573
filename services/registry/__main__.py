"""``python -m services.registry [--config FILE] [--port N]``: the registry service."""

from __future__ import annotations

from services.common.runner import run_service


def main() -> None:
    run_service("registry")


if __name__ == "__main__":
    main()
