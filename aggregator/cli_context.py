"""What every command shares: the global options' values, logging, the config, user errors.

``cli.main_options`` fills ``state`` from ``--config``, ``--log-level`` and ``--json-logs``;
each command then reads the config with ``read_config`` and ends a user error (a bad config, a
store that cannot be opened) with ``fail``: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from aggregator.config import DEFAULT_CONFIG, Config, load_config
from aggregator.errors import AggregatorError

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def stderr_console() -> Console:
    # rich is imported where something is drawn: a poll from cron (JSON or plain lines)
    # never needs it, and it was a twentieth of such a run's start-up.
    from rich.console import Console

    return Console(stderr=True)


EXIT_USER_ERROR = 2


class _State:
    config_path: Path = DEFAULT_CONFIG
    log_level: str = "INFO"
    json_logs: bool = False
    log_level_given: bool = False  # else the config's logging section decides


state = _State()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if state.json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(state.log_level.upper())
    for noisy in ("aiohttp", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str) -> typer.Exit:
    """A user error: its one-line reason on stderr; raise what it returns to exit with code 2."""
    stderr_console().print(f"aggregator: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USER_ERROR)


def read_config() -> Config:
    """The config ``--config`` names, its logging section applied unless the options overrule it."""
    try:
        config = load_config(state.config_path)
    except AggregatorError as error:
        raise fail(str(error)) from None
    if not state.log_level_given or (config.logging.format == "json" and not state.json_logs):
        if not state.log_level_given:
            state.log_level = config.logging.level
        state.json_logs = state.json_logs or config.logging.format == "json"
        setup_logging()
    return config
