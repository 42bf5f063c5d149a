"""A real, throwaway PostgreSQL for tests: Debian's server binaries run as an unprivileged cluster on
a loopback port, with fsync off (test data need not survive a power cut).

Where the binaries are missing the tests that need them skip and say why, unless
``CURATOR_REQUIRE_POSTGRES=1`` (CI sets it): then a missing server fails them."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

from helpers import free_port

INSTALL_HINT = "apt-get install postgresql (scripts/system-deps.sh)"


def find_bindir() -> Optional[Path]:
    """The newest installed server's bin folder (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    """``initdb`` + ``postgres`` under a temp folder; ``database()`` gives each test its own database."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="curator-pg-"))
        self.user = _unprivileged_user()
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Cluster":
        data = self.root / "data"
        data.mkdir(mode=0o700)
        if self.user is not None:  # initdb refuses to run as root
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            os.chown(data, self.user.pw_uid, self.user.pw_gid)
        self._run([self.bindir / "initdb", "-D", data, "-U", "curator", "-A", "trust", "--no-sync", "-E", "UTF8"])
        self.proc = subprocess.Popen(
            [self.bindir / "postgres", "-D", data, "-p", str(self.port), "-h", "127.0.0.1", "-k", self.root,
             "-F", "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=self._demote)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres did not start: " + self.proc.stderr.read().decode()[-2000:])
            if subprocess.run([self.bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("postgres did not accept connections within 30 s")

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:10]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://curator@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown; connections are gone with their tests
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, argv: list) -> None:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, preexec_fn=self._demote)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr[-2000:]}")

    def _demote(self) -> None:
        if self.user is not None:
            os.setgid(self.user.pw_gid)
            os.setuid(self.user.pw_uid)


def _unprivileged_user() -> Optional[pwd.struct_passwd]:
    """Whom to run the server as when the tests run as root: Debian's ``postgres`` user, else nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run the server as")
