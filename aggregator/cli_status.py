"""``aggregator status``: each source's health and next poll, as a table or JSON.

The next poll is the scheduler's own decision (``schedule.planned_poll``) from the same state the
daemon reads, so what status says is what the daemon will do. Below it, each source's images the
media archive could not download yet (how many, the last error).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from aggregator.cli_context import fail, read_config
from aggregator.config import Config
from aggregator.errors import AggregatorError
from aggregator.fetch import redact_url
from aggregator.index.media import MediaFailures
from aggregator.state import utcnow
from aggregator.store import open_store


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    fail_on_error: Annotated[
        bool, typer.Option("--fail-on-error", help="Exit 1 if any source is failing.")
    ] = False,
    fleet: Annotated[
        bool, typer.Option("--fleet", help="Only the fleet's nodes (with a PostgreSQL index:).")
    ] = False,
) -> None:
    """Each source's health and next poll (the daemon's own decision), failing sources first."""
    from aggregator.pipeline import source_fingerprint
    from aggregator.schedule import planned_poll

    config = read_config()
    now = utcnow()
    if fleet:
        _fleet_status(config, now, as_json)
        return
    try:
        with open_store(config) as store:
            # The scheduler's own decision, from the same state and store the daemon reads.
            states_of = [(source, store.index.source_state(source.name)) for source in config.sources]
            rows = [
                (
                    s,
                    planned_poll(
                        config, source, s, now, fingerprint=source_fingerprint(source), entries=store.index
                    ),
                )
                for source, s in states_of
            ]
            media_failures = {f.source: f for f in store.index.media_failures()}
    except AggregatorError as error:
        raise fail(str(error)) from None
    # Failing first (gone, then the longest streaks), then the rate-limited, then the healthy.
    rows.sort(
        key=lambda r: (not r[0].failing, not r[0].gone, -r[0].error_streak, r[0].health == "ok", r[0].name)
    )
    states = [s for s, _ in rows]
    if as_json:
        report = [
            s.public_json()
            | {"next_poll": plan.at.isoformat() if plan.at else None, "next_poll_reason": plan.reason}
            | _media_json(media_failures.get(s.name))
            for s, plan in rows
        ]
        typer.echo(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="sources")
        for column in (
            "source",
            "health",
            "http",
            "last attempt",
            "last success",
            "new/upd",
            "streak",
            "next poll",
            "why then / last error",
        ):
            table.add_column(column)
        for s, plan in rows:
            detail = f"{plan.reason}; last error: {s.last_error}" if s.last_error else plan.reason
            if s.permanent_url:
                detail += f"; moved permanently to {redact_url(s.permanent_url)}: update the config"
            table.add_row(
                s.name,
                s.health,
                str(s.http_status or "-"),
                _utc(s.last_attempt, "never"),
                _utc(s.last_success, "never"),
                f"{s.new_count}/{s.updated_count}",
                str(s.error_streak),
                _utc(plan.at, "-"),
                detail,
            )
        Console(width=max(Console().width, 160)).print(table)
        failing = sum(s.failing for s in states)
        typer.echo(f"{len(states)} sources, {failing} failing (times in UTC)")
        for failure in media_failures.values():
            typer.echo(
                f"media: {failure.source}: {failure.count} images not archived yet "
                f"(last try {_utc(failure.last_try, 'never')}: {failure.last_error})"
            )
        if config.index is not None:
            _fleet_status(config, now, as_json=False)
    if fail_on_error and any(s.failing for s in states):
        raise typer.Exit(1)


def _media_json(failure: MediaFailures | None) -> dict[str, object]:
    """A source's media failures in ``status --json`` (only where it has some)."""
    if failure is None:
        return {}
    last_try = failure.last_try.isoformat() if failure.last_try else None
    return {
        "media_failures": failure.count,
        "media_last_error": failure.last_error,
        "media_last_try": last_try,
    }


def _fleet_status(config: Config, now: datetime, as_json: bool) -> None:
    """The fleet's nodes: live ones first, with their leases and last heartbeat."""
    from aggregator.fleet.report import read_fleet

    if config.index is None:
        raise fail("no fleet: the config has no PostgreSQL index:")
    try:
        reports = read_fleet(
            config.index, config.fleet.lease, config.fleet.heartbeat, config.defaults.deadline, now
        )
    except AggregatorError as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps([r.public_json() for r in reports], ensure_ascii=False, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fleet")
    for column in ("node", "state", "host:port", "pid", "leases", "started", "last heartbeat"):
        table.add_column(column)
    for r in reports:
        table.add_row(
            r.info.node,
            "alive" if r.alive else "gone",
            f"{r.info.hostname}:{r.info.port or '-'}",
            str(r.info.pid),
            str(r.info.leases),
            _utc(r.info.started, "-"),
            _utc(r.info.heartbeat, "-"),
        )
    Console(width=max(Console().width, 160)).print(table)
    typer.echo(f"{sum(r.alive for r in reports)} nodes alive, {sum(not r.alive for r in reports)} gone")


def _utc(moment: datetime | None, missing: str) -> str:
    """A time as ``2026-12-01 22:10:05 UTC``: status says which zone its times are in."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else missing
