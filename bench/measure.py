"""Run one command as a measured child: wall time, CPU time and peak memory of its whole tree.

CPU is the change in ``getrusage(RUSAGE_CHILDREN)`` across the step; that covers
the child and every descendant once it is reaped. The driver makes itself a
child subreaper, so descendants orphaned by the child (the multiprocessing
forkserver and its workers) are re-parented to the driver and reaped here rather
than by init, and their CPU is counted too. Peak RSS is reported two ways: the
largest single process (``ru_maxrss`` from ``wait4``) and the largest sum over
the whole tree, sampled from ``/proc`` every 50 ms (shared pages counted once per
process, so it overstates a little).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
_PAGE = os.sysconf("SC_PAGE_SIZE")


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@dataclass(frozen=True)
class Measurement:
    argv: tuple[str, ...]
    returncode: int
    wall: float
    cpu: float
    peak_rss_mb: float  # largest single process
    peak_tree_mb: float  # largest sampled sum over the process tree
    stdout: str
    stderr: str


def _ppids() -> dict[int, int]:
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rindex(b")") + 2 :].split()
        parents[int(name)] = int(fields[1])
    return parents


def children() -> set[int]:
    """This process's children now: a step leaves them alone (a test's own workers, servers)."""
    me = os.getpid()
    return {pid for pid, ppid in _ppids().items() if ppid == me}


def tree_pids(root: int) -> list[int]:
    parents = _ppids()
    found = [root]
    frontier = [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == current]
        found += children
        frontier += children
    return found


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_rss_mb(root: int) -> float:
    return sum(rss_mb(pid) for pid in tree_pids(root))


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def run(
    argv: Sequence[str],
    *,
    keep: Sequence[int] = (),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Measurement:
    """Run ``argv`` to completion; ``keep`` names our long-lived children (servers) not to reap."""
    # The previous step's writes (a cold run leaves ~1.7 GB dirty) flushed first, so that the
    # kernel's writeback does not share the cores with the step measured.
    os.sync()
    keep = [*keep, *children()]  # only what the step leaves behind is reaped
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    peak_tree = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.wait(0.05):
            peak_tree = max(peak_tree, tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for thread in readers:
        thread.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    for thread in readers:
        thread.join(timeout=10)
    peak = usage.ru_maxrss / 1024
    peak = max(peak, _reap_orphans(set(keep)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Measurement(
        argv=tuple(argv),
        returncode=proc.returncode,
        wall=wall,
        cpu=_cpu(after) - _cpu(before),
        peak_rss_mb=peak,
        peak_tree_mb=max(peak_tree, peak),
        stdout=b"".join(out_chunks).decode("utf-8", "replace"),
        stderr=b"".join(err_chunks).decode("utf-8", "replace"),
    )


def stop_daemon(proc: subprocess.Popen[bytes], keep: Sequence[int]) -> None:
    """SIGTERM a daemon the step started (killed after 60 s), then reap what it left behind."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _reap_orphans(set(keep))


def _reap_orphans(keep: set[int], deadline: float = 15.0) -> float:
    """Wait for descendants re-parented to us (they exit once their parent is gone)."""
    me = os.getpid()
    peak = 0.0
    limit = time.monotonic() + deadline
    while True:
        orphans = [pid for pid, ppid in _ppids().items() if ppid == me and pid not in keep]
        orphans = [pid for pid in orphans if pid != me]
        if not orphans:
            return peak
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                reaped, _status, usage = os.wait4(pid, os.WNOHANG)
                if reaped:
                    peak = max(peak, usage.ru_maxrss / 1024)
        if time.monotonic() > limit:
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            limit = time.monotonic() + 5
        time.sleep(0.02)
