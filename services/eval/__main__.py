"""``python -m services.eval``: run the eval service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("eval")
