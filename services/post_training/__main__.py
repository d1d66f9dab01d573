"""``python -m services.post_training``: run the post_training service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("post_training")
