"""A real HMA 2.0 for the integration tests (``../shared/vendor/hma-local/run.sh``): started once
per session, called over HTTP, restarted (app server and PostgreSQL, data kept) on demand."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

__all__ = ["HMA_LOCAL", "Hma", "hma_or_skip"]

HMA_LOCAL = Path(__file__).resolve().parents[1].parent / "shared" / "vendor" / "hma-local"


def hma_or_skip() -> Path:
    """run.sh, or a skip saying why (a failure in CI, where the HMA tests must run)."""
    run = HMA_LOCAL / "run.sh"
    if not run.exists():
        message = f"HMA tests need {run} (../shared/vendor/hma-local next to the repository)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true: they must run")
        pytest.skip(message)
    return run


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Hma:
    def __init__(self, run: Path, env: dict[str, str]) -> None:
        self.run = run
        self.env = env
        self.url = env["HMA_URL"]
        self.dsn = env["HMA_DATABASE_URI"]
        self.workdir = Path(env["HMA_WORKDIR"])

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                session.request(method, self.url + path, **kwargs) as response:
            return response.status, await response.json(content_type=None)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        status, body = await self.call(method, path, **kwargs)
        assert status in (200, 201), f"{method} {path}: {status} {body}"
        return body

    async def create_bank(self, name: str) -> None:
        await self.ok("POST", "/c/banks", json={"name": name})

    async def add(self, bank: str, **signals: str) -> int:
        return int((await self.ok("POST", f"/c/bank/{bank}/signal", json=signals))["id"])

    async def raw_lookup(self, pdq: str) -> dict[int, int]:
        body = await self.ok("GET", "/m/raw_lookup", params={"signal_type": "pdq", "signal": pdq,
                                                             "include_distance": "true"})
        return {int(m["bank_content_id"]): int(m["distance"]) for m in body["matches"]}

    async def content(self, bank: str, content_id: int) -> dict[str, Any]:
        return await self.ok("GET", f"/c/bank/{bank}/content/{content_id}", params={"include_signals": "true"})

    def status_ok(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/status", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # -- restarts (the data stays: same PostgreSQL data dir, same ports) ------------------------

    def _pid(self, name: str) -> int:
        return int((self.workdir / name).read_text().split()[0])

    def stop_app(self) -> None:
        """Stop HMA's app server (gunicorn), as a deploy or crash would; PostgreSQL keeps running."""
        pid = self._pid("hma.master.pid")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "HMA's gunicorn did not stop"

    def restart_database(self) -> None:
        """PostgreSQL restarted (fast shutdown, same data dir); run.sh's stop is told its new pid."""
        pg_bin = Path(next(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))).parent
        data = self.workdir / "pg" / "data"
        as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] if os.getuid() == 0 else []
        done = subprocess.run([*as_pg, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60",
                               "-l", str(self.workdir / "pg" / "restarted.log"), "restart"], capture_output=True,
                              text=True, cwd=self.workdir / "pg", timeout=90)
        assert done.returncode == 0, f"pg_ctl restart: {done.stdout} {done.stderr}"
        (self.workdir / "pg.pid").write_text((data / "postmaster.pid").read_text().splitlines()[0] + "\n")

    def start_app(self, timeout_s: float = 120) -> None:
        """Start HMA's app server again the way run.sh does, and wait for /status 200."""
        src = HMA_LOCAL.parent / "hma"
        venv = Path(os.environ.get("HMA_VENV", "/tmp/hma-venv"))
        env = {**os.environ, "OMM_CONFIG": str(HMA_LOCAL / "omm_config.py"), "HMA_DATABASE_URI": self.dsn,
               "PYTHONPATH": str(src / "src"), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        pidfile = self.workdir / "hma.gunicorn.pid"
        pidfile.unlink(missing_ok=True)
        with open(self.workdir / "hma.log", "ab") as log:
            subprocess.Popen([str(venv / "bin" / "gunicorn"), "--bind", f"127.0.0.1:{self.env['HMA_PORT']}",
                              "--workers", "1", "--threads", "4", "--timeout", "120", "--graceful-timeout", "10",
                              "--pid", str(pidfile), "--no-control-socket", "--access-logfile", "-",
                              "--error-logfile", "-", "OpenMediaMatch.app:create_app()"],
                             cwd=self.workdir, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.status_ok():
            assert time.monotonic() < deadline, f"HMA did not come back within {timeout_s} s"
            time.sleep(0.3)
        (self.workdir / "hma.master.pid").write_text(pidfile.read_text())
