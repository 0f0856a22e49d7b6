"""CPU per not-modified poll, for each HTTP transport of the fetcher.

    python -m bench.poll_cpu [--sources 1000] [--runs 3] [--rounds 3] [--baseline REV]

One loopback server (``bench.server``, uvicorn, its own process) serves
``--sources`` tiny feeds; every variant runs in a fresh child process that
fetches each once (cold: validators and connections), then polls all of them
with their validators ``--runs`` times, every answer a 304. A run's figure is
the child's CPU seconds (``time.process_time``) over the polls: ms per poll.
The variants take turns, ``--rounds`` times (the load of a shared machine
moves by the minute), and the median of all a variant's runs is reported.
The child also reports how long importing ``aggregator.fetch`` took (wall
ms, in that fresh process; the median over the rounds).

Variants: httpx over httpx-aiohttp's transport and over httpcore (this
checkout), and, with ``--baseline REV`` (default ``main``), the fetcher of
that revision as it is, extracted with ``git archive`` into a temporary
folder (its own transport, whatever that was). The server's CPU is in no
figure, but it shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEED = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {i}</title>'
    "<link>http://127.0.0.1/</link><description>d</description></channel></rss>\n"
)


def child(base_url: str, sources: int, runs: int, transport: str | None) -> dict[str, object]:
    """Runs in the measured process: cold once, then ``runs`` warm polls of every source."""
    started = time.perf_counter()
    import inspect

    import aggregator.fetch
    from aggregator.fetch import Fetcher, FetchLimits, FetchRequest

    import_ms = (time.perf_counter() - started) * 1000
    kwargs = {"transport": transport} if transport else {}
    if transport and "transport" not in inspect.signature(Fetcher).parameters:
        raise SystemExit(f"this fetcher has no transport choice (asked for {transport!r})")
    urls = [f"{base_url}/f/feed-{i}.xml" for i in range(sources)]

    async def go() -> tuple[list[float], set[int], str]:
        # As `make bench` configures it: every feed on one host, 16 at a time.
        fetcher = Fetcher("bench-poll-cpu/1", FetchLimits(concurrency=16, per_host=16), **kwargs)
        try:
            cold = await asyncio.gather(*(fetcher.fetch(FetchRequest(url)) for url in urls))
            requests = [FetchRequest(r.url, validators=r.validators) for r in cold]
            per_poll: list[float] = []
            statuses: set[int] = set()
            for _ in range(runs):
                cpu = time.process_time()
                results = await asyncio.gather(*(fetcher.fetch(request) for request in requests))
                per_poll.append((time.process_time() - cpu) / len(requests) * 1000)
                statuses |= {r.status for r in results}
            return per_poll, statuses, str(getattr(fetcher, "transport", "aiohttp, direct"))
        finally:
            await fetcher.aclose()

    per_poll, statuses, kind = asyncio.run(go())
    return {
        "transport": kind,
        "ms_per_poll": per_poll,
        "statuses": sorted(statuses),
        "import_ms": import_ms,
        "module": aggregator.fetch.__file__,
    }


def _run_child(
    base_url: str, sources: int, runs: int, transport: str | None, pythonpath: Path
) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    argv = [sys.executable, "-m", "bench.poll_cpu", "--child", base_url, "--sources", str(sources)]
    argv += ["--runs", str(runs), *(["--transport", transport] if transport else [])]
    # cwd is the package's root: the child imports aggregator from there, not from the venv's install.
    done = subprocess.run(argv, env=env, cwd=pythonpath, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {transport or 'baseline'} failed:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def _extract(revision: str, into: Path) -> None:
    """The revision's aggregator package and bench folder, as files (no worktree, no checkout)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "aggregator", "bench"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    # This checkout's script drives the baseline too (the revision may not have it).
    (into / "bench" / "poll_cpu.py").write_bytes(Path(__file__).read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="main", help="git revision to compare with ('' for none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sources, args.runs, args.transport)))
        return

    with tempfile.TemporaryDirectory(prefix="poll-cpu-") as temporary:
        work = Path(temporary)
        corpus, override = work / "corpus", work / "override"
        corpus.mkdir()
        override.mkdir()
        for index in range(args.sources):
            (corpus / f"feed-{index}.xml").write_text(FEED.format(i=index))
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.server", str(corpus), str(override)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert server.stdout is not None
            base_url = f"http://127.0.0.1:{int(server.stdout.readline())}"
            variants: list[tuple[str, str | None, Path]] = [
                ("httpx + httpx-aiohttp", "aiohttp", ROOT),
                ("httpx + httpcore", "httpcore", ROOT),
            ]
            if args.baseline:
                baseline = work / "baseline"
                baseline.mkdir()
                _extract(args.baseline, baseline)
                variants.append((f"{args.baseline}'s fetcher", None, baseline))
            runs: dict[str, list[float]] = {name: [] for name, _, _ in variants}
            imports: dict[str, list[float]] = {name: [] for name, _, _ in variants}
            for round_ in range(args.rounds):
                for name, transport, path in (
                    variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
                ):
                    result = _run_child(base_url, args.sources, args.runs, transport, path)
                    assert result["statuses"] == [304], f"{name}: not all 304: {result['statuses']}"
                    assert str(result["module"]).startswith(str(path)), f"{name}: {result['module']}"
                    runs[name] += [float(x) for x in result["ms_per_poll"]]  # type: ignore[attr-defined]
                    imports[name].append(float(result["import_ms"]))  # type: ignore[arg-type]
        finally:
            server.terminate()
            server.wait(timeout=10)

    print(
        f"{args.sources} sources, every poll a 304; {args.rounds} rounds of {args.runs} runs per variant, "
        "variants taking turns"
    )
    print("| client | CPU ms per poll (median) | runs, in order | import aggregator.fetch, wall ms |")
    print("|---|---|---|---|")
    for name, _, _ in variants:
        listed = ", ".join(f"{x:.3f}" for x in runs[name])
        median, import_ms = statistics.median(runs[name]), statistics.median(imports[name])
        print(f"| {name} | {median:.3f} | {listed} | {import_ms:.0f} |")


if __name__ == "__main__":
    main()
