"""The daemon as a real subprocess (``python -m aggregator -c CONFIG run``), for the tests that need it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from aggregator.config import load_config
from support.helpers import REPO, wait_for

FETCH_LINE = re.compile(
    r"source=(?P<source>\S+) outcome=(?P<outcome>\S+) status=(?P<status>\S+) "
    r"new=(?P<new>\d+) updated=(?P<updated>\d+) duration=(?P<duration>[\d.]+)s"
)


class DaemonProcess:
    """``python -m aggregator -c CONFIG run`` with its output in a log file."""

    def __init__(self, config: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = load_config(config).server.port
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *options, "-c", str(config), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
        )
        self.pid = self.process.pid

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def fetch_lines(self, source: str | None = None) -> list[dict[str, str]]:
        return [
            m.groupdict()
            for m in FETCH_LINE.finditer(self.log())
            if source is None or m.group("source") == source
        ]

    def health(self) -> dict[str, Any]:
        assert self.process.poll() is None, f"daemon exited {self.process.returncode}:\n{self.log()}"
        response = httpx.get(self.url("healthz"), timeout=5)
        data: dict[str, Any] = response.json()
        return data

    def wait_healthy(self, timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (h := self.health()).get("ok") and h.get("last_build") and h,
            timeout,
            what="/healthz ok",
        )

    def descendants(self) -> set[int]:
        found: set[int] = set()
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    children = (task / "children").read_text().split()
                except OSError:
                    continue
                for child in map(int, children):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
        return found

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 25) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()
        return code
