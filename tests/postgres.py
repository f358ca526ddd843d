"""A throwaway PostgreSQL server for tests and benchmarks, from the machine's own binaries.

`initdb` and `pg_ctl` run as the `postgres` user when we are root (PostgreSQL refuses to run
as root), in a temporary folder, on a free port of 127.0.0.1; `stop()` removes it all.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from glob import glob
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb was not found: install Debian's postgresql")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TemporaryPostgres:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.folder = Path(tempfile.mkdtemp(prefix="groupbot-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)  # noqa: S603

    def start(self, *, durable: bool = False) -> TemporaryPostgres:
        """Start the server; unless `durable`, without fsync (tests need no crash safety from
        the server itself, and run faster)."""
        if not self.data.exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
        )
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
            "-w", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        """Stop the server, keeping its data (start() brings it back)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def log_statements(self, url: str) -> None:
        """Have the server log every statement run on `url`'s database, by connections opened
        from now on."""
        database = url.rpartition("/")[2]
        self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
            "-c", f"ALTER DATABASE {database} SET log_statement = 'all'",
        )  # fmt: skip

    def logged_from_here(self) -> Callable[[], str]:
        """What the server's log holds from now on, read when asked (it is written as the
        server goes: wait for what you look for, e.g. with tests.conftest.eventually)."""
        log = self.folder / "log"
        start = log.stat().st_size

        def since() -> str:
            with log.open("rb") as written:
                written.seek(start)
                return written.read().decode(errors="replace")

        return since

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
