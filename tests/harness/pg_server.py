"""PostgreSQL for the tests: a server that answers, or a throwaway one the tests own.

`admin_dsn()` decides once per run, in this order: `VIGIL_TEST_PG_DSN` if set;
else a server on 127.0.0.1:5432 if one answers (user `postgres`, trust auth);
else a throwaway cluster made with the machine's `initdb`/`pg_ctl`. Those refuse
to run as root, so as root they run as an unprivileged user (`postgres` when
the machine has one, else `nobody`).

`PgServer` is also what outage tests use: a real server they can stop (cleanly
or as a crash) and start again on the same port and data.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PgServer", "admin_dsn", "find_pg_bindir", "free_port", "server_answers", "throwaway_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_answers(host: str, port: int) -> bool:
    """True when something accepts TCP connections there (a quick probe, no login)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def find_pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on the machine (a directory holding initdb and pg_ctl)."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    candidates += [Path("/usr/local/pgsql/bin")]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".") if p.isdigit())


class PgServer:
    """A throwaway PostgreSQL cluster on a free loopback port, owned by the test that made it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
        self.data = self._root / "data"
        self._user = _unprivileged_user() if os.geteuid() == 0 else None
        self._tls = False
        if self._user is not None:
            os.chown(self._root, self._user.pw_uid, self._user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def enable_tls(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve TLS (before `start`): the certificate and key, readable by the server's user only."""
        for name, pem in (("server.crt", cert_pem), ("server.key", key_pem)):
            path = self.data / name
            path.write_bytes(pem)
            path.chmod(0o600)
            if self._user is not None:
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self._tls = True

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        if self._tls:
            options += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self._root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (clean) or `immediate` (as a crash: no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        user = self._user
        subprocess.run(
            [str(self.bindir / program), *args],
            check=True,
            capture_output=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=self._root,
        )


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and the machine has neither a postgres nor a nobody user for PostgreSQL")


@contextlib.contextmanager
def throwaway_server(tls: tuple[bytes, bytes] | None = None) -> Iterator[PgServer]:
    """A started throwaway server (serving TLS with `tls` = (certificate PEM, key PEM)), destroyed afterwards.

    Skips the caller's test where no server binaries exist.
    """
    bindir = find_pg_bindir()
    if bindir is None:
        import pytest

        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    server = PgServer(bindir)
    try:
        if tls is not None:
            server.enable_tls(*tls)
        server.start()
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def admin_dsn() -> Iterator[str]:
    """A superuser DSN for this run (see the module docstring for the order)."""
    given = os.environ.get("VIGIL_TEST_PG_DSN")
    if given:
        yield given
        return
    if server_answers("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    with throwaway_server() as server:
        yield server.dsn
