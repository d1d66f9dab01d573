"""Structured logging: one line per event, ``key=value`` fields, never secrets."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_logging"]


class _LineFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", "\\n")
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<5} {self.service} {record.name}: {message}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


def configure_logging(service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("STACKMESH_LOG_LEVEL", "INFO").upper())
    for noisy in ("httpx", "httpx2", "urllib3", "sentence_transformers", "filelock", "huggingface_hub",
                  "mcp.client.streamable_http", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
