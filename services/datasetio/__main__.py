"""``python -m services.datasetio``: run the datasetio service."""

from services.common.runner import run_service

if __name__ == "__main__":
    run_service("datasetio")
