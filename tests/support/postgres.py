"""A throwaway PostgreSQL 15 cluster on 127.0.0.1 for tests: initdb in a temp dir, a free port,
stopped and deleted afterwards. As root it runs as the ``postgres`` user (initdb refuses root)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import psycopg

from tests.support.mesh import free_port

__all__ = ["PostgresServer"]


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.directory = pathlib.Path(tempfile.mkdtemp(prefix="stackmesh-pg-"))
        self.data = self.directory / "data"
        self._databases = 0

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        subprocess.run(_as_postgres(["initdb", "-D", str(self.data), "-A", "trust", "-U", "stackmesh",
                                     "--no-sync"]), check=True, capture_output=True)
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(self.data), "-o", options, "-l",
                                     str(self.directory / "log"), "-w", "start"]), check=True, capture_output=True)
        return self

    def stop(self) -> None:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def backend(self, db: str) -> dict[str, object]:
        """A Llama Stack ``kv_postgres`` backend entry for database ``db``."""
        return {"type": "kv_postgres", "host": "127.0.0.1", "port": self.port, "db": db, "user": "stackmesh",
                "password": "unused"}

    def new_database(self) -> str:
        self._databases += 1
        name = f"registry_{self._databases}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="stackmesh", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name
