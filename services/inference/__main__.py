"""``python -m services.inference``: the inference service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("inference")
