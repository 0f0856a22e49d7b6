"""Run the real CLI on a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

from support.helpers import REPO


def on_terminal(args: list[str], answer: bytes = b"", *, expect_code: int | None = 0) -> str:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; its output without colours."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", *args],
        stdin=follower, stdout=follower, stderr=follower, cwd=REPO, env=env,
    )  # fmt: skip
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process is done
                    break
                if not chunk:
                    break
                output += chunk
                if answer and b"Which one" in output:
                    os.write(leader, answer)
                    answer = b""
            elif process.poll() is not None:
                break
    finally:
        os.close(leader)
        code = process.wait(timeout=30)
        if expect_code is not None:
            assert code == expect_code, output.decode("utf-8", "replace")[-3000:]
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))
