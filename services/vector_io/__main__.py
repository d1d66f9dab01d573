"""``python -m services.vector_io``: the vector_io service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("vector_io")
