"""``python -m bench profile``: where the cold cycle, the warm cycle and a full build spend CPU.

    python -m bench profile --feeds 200 --entries 50

Each step runs under ``py-spy record --subprocesses`` (parser workers included;
idle threads left out, so the samples are CPU). The collapsed stacks are kept in
``bench/work/profile/<step>.txt`` and summed here into the functions with the
most samples on top of the stack (self) and anywhere in it (inclusive).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

from bench.corpus import CorpusSpec, ensure_corpus
from bench.driver import AGGREGATOR, REPO, ROOT, Server, empty_trash, fresh_store, set_aside, write_config

PY_SPY = str(Path(sys.executable).parent / "py-spy")


def record(name: str, argv: list[str], out_dir: Path, rate: int) -> Path:
    out = out_dir / f"{name}.txt"
    subprocess.run(
        [
            PY_SPY,
            "record",
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            str(rate),
            "-o",
            str(out),
            "--",
            *argv,
        ],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return out


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif "aggregator" in parts:
        parts = parts[parts.index("aggregator") :]
    else:
        parts = parts[-1:]
    return f"{name} ({'/'.join(parts)})"


def summarize(path: Path, top: int) -> str:
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"## {path.stem}: {total} samples", "", "self (top of stack):"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_counts.most_common(top)]
    lines += ["", "inclusive (anywhere in the stack):"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench profile")
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--steps", default="cold,warm,build")
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    args = parser.parse_args(argv)
    corpus = ensure_corpus(CorpusSpec(args.feeds, args.entries), args.work / "corpus")
    out_dir = args.work / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    server = Server(corpus, args.work / "override" / "profile")
    try:
        run_dir = args.work / "profile-run"
        fresh_store(run_dir)
        config = write_config(run_dir / "aggregator.yaml", corpus, server)
        base = [AGGREGATOR, "-c", str(config), "--log-level", "warning"]
        steps = args.steps.split(",")
        reports = []
        if "cold" in steps or "warm" in steps:
            reports.append(record("cold", [*base, "fetch", "--json"], out_dir, args.rate))
        if "warm" in steps:
            reports.append(record("warm", [*base, "fetch", "--json"], out_dir, args.rate))
        if "build" in steps:
            set_aside(run_dir / "feeds")
            reports.append(record("build", [*base, "build"], out_dir, args.rate))
    finally:
        server.stop()
        empty_trash(args.work)
    for report in reports:
        text = summarize(report, args.top)
        (out_dir / f"{report.stem}.summary.txt").write_text(text + "\n")
        print(text + "\n")
