"""``python -m services.safety``: run the safety service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("safety")
