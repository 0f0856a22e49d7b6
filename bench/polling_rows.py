"""Rows of a daemon polling its own tiny feeds over a measured window, most answering 304."""

from __future__ import annotations

import argparse

from bench.driver import Row, log


def daemon_polls_row(args: argparse.Namespace) -> Row:
    """``bench.daemon_polls``: the daemon's CPU per not-modified poll beside a warm fetch's per source."""
    from bench.daemon_polls import compare

    sources, minutes = args.daemon_sources, args.daemon_minutes
    log(f"daemon polls: {sources} sources at 1m, a {minutes:g} min window")
    (result,) = compare(sources, minutes, args.work / "daemon-polls")
    daemon, fetch = result.daemon, result.fetch
    return Row(
        f"daemon, {sources} sources at 1m: CPU per not-modified poll", None,
        goal="<= 1.5x fetch", passed=result.ratio <= 1.5 and fetch.not_modified == fetch.sources,
        note=f"daemon {daemon.ms_per_poll:.2f} ms a poll ({daemon.polls} polls, {daemon.cpu:.1f} CPU s "
        f"in {daemon.seconds:.0f} s); warm fetch {fetch.ms_per_source:.2f} ms a source "
        f"({fetch.cpu:.2f} CPU s, {fetch.not_modified} 304s); {result.ratio:.2f}x; bench/daemon_polls.py",
    )  # fmt: skip


def fleet_scale_row(args: argparse.Namespace) -> Row:
    """``bench.fleet_scale``: one fleet node polling many small sources, mostly 304, at a sustained rate."""
    from aggregator.config import parse_duration
    from bench.fleet_scale import scale_run, summary

    sources, every, minutes = args.scale_sources, args.scale_interval, args.scale_minutes
    log(f"fleet scale: {sources} sources at {every} on one node, a {minutes:g} min window")
    run = scale_run(sources, parse_duration(every), minutes, args.work / "fleet-scale", [])
    return Row(
        f"one fleet node (PostgreSQL index), {sources} sources at {every}, mostly 304",
        None,
        goal="no double poll",
        passed=run.double_polls == 0 and run.window.requests > 0,
        note=summary(run) + "; bench/fleet_scale.py",
    )
