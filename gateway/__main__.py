"""``python -m gateway``: the front door."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("gateway")
