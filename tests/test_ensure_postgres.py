"""scripts/ensure-postgres.sh: installs Debian's postgresql only when the server binaries are missing.

apt-get here is a stand-in on PATH that records how it was called; nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.helpers import REPO

SCRIPT = REPO / "scripts" / "ensure-postgres.sh"


def run_script(tmp_path: Path, *, bindir: Path, apt: bool) -> tuple[subprocess.CompletedProcess[str], Path]:
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    for tool in ("id", "dirname", "mkdir", "tee", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    calls = tmp_path / "apt-calls"
    if apt:
        fake = tools / "apt-get"
        fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
        fake.chmod(0o755)
    env = {
        "PATH": str(tools),
        "PG_BINDIR": str(bindir),
        "PG_CREATECLUSTER_CONF": str(tmp_path / "etc" / "createcluster.conf"),
    }
    done = subprocess.run(
        [shutil.which("sh") or "/bin/sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )
    return done, calls


def test_nothing_happens_when_the_binaries_are_there(tmp_path: Path) -> None:
    bindir = tmp_path / "pg"
    bindir.mkdir()
    for tool in ("initdb", "pg_ctl"):
        (bindir / tool).write_text("#!/bin/sh\n")
        (bindir / tool).chmod(0o755)
    done, calls = run_script(tmp_path, bindir=bindir, apt=True)
    assert (done.returncode, done.stderr) == (0, "")
    assert not calls.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="installs only as root (or through sudo)")
def test_missing_binaries_are_installed_with_apt_get(tmp_path: Path) -> None:
    done, calls = run_script(tmp_path, bindir=tmp_path / "none", apt=True)
    assert done.returncode == 0
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("update")
    assert lines[1].startswith("install -y") and lines[1].endswith(" postgresql")
    assert (tmp_path / "etc" / "createcluster.conf").read_text() == "create_main_cluster = false\n"


def test_without_apt_get_the_tests_skip_and_the_script_still_succeeds(tmp_path: Path) -> None:
    done, calls = run_script(tmp_path, bindir=tmp_path / "none", apt=False)
    assert done.returncode == 0
    assert "PostgreSQL tests will skip" in done.stderr
    assert not calls.exists()
