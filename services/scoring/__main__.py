"""``python -m services.scoring``: run the scoring service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("scoring")
