"""examples/fleet: the Compose file and its config agree with each other, the image and the CLI.

Docker is not on the machines the tests run on, so the file is read, not run: every command
line in it (the image's ``CMD``, the commands its comments give) is parsed by the real CLI, the
config is checked by ``aggregator check``, and every path, port and credential the config uses
is the one the Compose file mounts, publishes or sets.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from support.helpers import REPO, run_cli

from aggregator.cli import app
from aggregator.daemon import STOP_DEADLINE_SECONDS

EXAMPLE = REPO / "examples" / "fleet"
COMPOSE = EXAMPLE / "compose.yaml"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def node_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in data["services"].items() if "build" in service}


def image_command(dockerfile: Path) -> list[str]:
    """The Dockerfile's exec-form ``CMD``."""
    lines = [line for line in dockerfile.read_text(encoding="utf-8").splitlines() if line.startswith("CMD ")]
    assert len(lines) == 1, lines
    command: list[str] = json.loads(lines[0].removeprefix("CMD "))
    return command


def parse_cli(argv: list[str]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """``aggregator ARGS`` through the real CLI's parser: (global options, command, its options).

    An unknown option or command raises the CLI's usage error, as it would on the command line.
    """
    assert argv[0] == "aggregator", argv
    group = typer.main.get_command(app)
    with group.make_context("aggregator", argv[1:]) as context:
        # The words after the global options: the command's name first (click keeps it apart).
        words = [*getattr(context, "_protected_args", []), *context.args]
        name, command, rest = group.resolve_command(context, words)
        assert name is not None and command is not None, words
        with command.make_context(name, rest, parent=context) as sub:
            return dict(context.params), name, dict(sub.params)


def commented_commands() -> list[list[str]]:
    """The ``docker compose ...`` commands of the file's opening comments, continuation lines joined."""
    text = []
    for line in COMPOSE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text.append(line.lstrip("#").strip())
    joined = re.sub(r"\\\s+", " ", "\n".join(text))
    commands = []
    for line in joined.splitlines():
        if line.startswith("docker compose"):
            commands.append(shlex.split(line.split("#", 1)[0]))
    return commands


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> what is mounted there (a named volume or a file beside compose.yaml)."""
    found = {}
    for volume in service["volumes"]:
        source, target, *_mode = volume.split(":")
        found[target] = source
    return found


def test_the_image_command_runs_the_daemon_on_the_config_each_node_mounts() -> None:
    data = compose()
    nodes = node_services(data)
    assert len(nodes) >= 2
    for name, service in nodes.items():
        build = service["build"]
        dockerfile = (EXAMPLE / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file(), (name, dockerfile)
        argv = service.get("command") or image_command(dockerfile)
        options, command, _ = parse_cli(argv)
        assert command == "run"
        config_in_container = str(options["config"])
        source = mounts(service).get(config_in_container)
        assert source is not None, f"{name}: nothing is mounted at {config_in_container}"
        assert (EXAMPLE / source).resolve() == (EXAMPLE / "aggregator.yaml").resolve()


def test_the_commented_commands_are_valid_commands_of_the_cli() -> None:
    data = compose()
    commands = commented_commands()
    assert any("exec" in command for command in commands), commands
    config_targets = {target for s in node_services(data).values() for target in mounts(s)}
    for command in commands:
        assert command[:4] == ["docker", "compose", "-f", "examples/fleet/compose.yaml"], command
        assert (REPO / command[3]).resolve() == COMPOSE.resolve()
        action, *rest = command[4:]
        if action == "exec":
            service, *argv = rest
            assert service in data["services"], service
            options, name, params = parse_cli(argv)
            assert str(options["config"]) in config_targets
            if name == "status":
                assert params["fleet"] is True
        else:
            assert action in ("up", "stop", "down", "logs", "ps"), command
            assert all(arg.startswith("-") or arg in data["services"] for arg in rest), command


def test_the_config_is_valid_and_names_the_database_the_file_runs() -> None:
    checked = run_cli("-c", str(EXAMPLE / "aggregator.yaml"), "check")
    assert checked.returncode == 0, checked.stderr
    config = yaml.safe_load((EXAMPLE / "aggregator.yaml").read_text(encoding="utf-8"))
    data = compose()
    url = urlsplit(config["index"])
    assert url.scheme == "postgresql"
    database = data["services"][url.hostname]  # the host is the database's service name
    environment = database["environment"]
    assert url.username == environment["POSTGRES_USER"]
    assert url.password == environment["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == environment["POSTGRES_DB"]
    assert (url.port or 5432) == 5432
    assert environment["POSTGRES_USER"] in database["healthcheck"]["test"]
    for service in node_services(data).values():
        assert service["depends_on"][url.hostname]["condition"] == "service_healthy"


@pytest.mark.parametrize("folder", ["posts", "feeds"])
def test_every_node_shares_the_folders_the_config_names(folder: str) -> None:
    config = yaml.safe_load((EXAMPLE / "aggregator.yaml").read_text(encoding="utf-8"))
    data = compose()
    for name, service in node_services(data).items():
        options, _command, _ = parse_cli(
            service.get("command") or image_command(REPO / "deploy" / "Dockerfile")
        )
        # Relative paths are relative to the config file's folder, inside the container too.
        in_container = posixpath.normpath(
            posixpath.join(posixpath.dirname(str(options["config"])), config["paths"][folder])
        )
        volume = mounts(service).get(in_container)
        assert volume is not None, f"{name}: the config's {folder} folder {in_container} is not mounted"
        assert volume in data["volumes"], f"{name}: {in_container} is not a shared named volume"


def test_nodes_publish_the_port_the_config_serves_and_have_time_to_stop_cleanly() -> None:
    config = yaml.safe_load((EXAMPLE / "aggregator.yaml").read_text(encoding="utf-8"))
    assert config["server"]["host"] == "0.0.0.0"  # reachable from outside the container
    published = []
    for service in node_services(compose()).values():
        (mapping,) = service["ports"]
        host_port, container_port = mapping.split(":")
        assert int(container_port) == config["server"]["port"]
        published.append(host_port)
        # SIGTERM's clean stop (runs in flight, the last build, leases back) before Compose's SIGKILL.
        grace = float(str(service["stop_grace_period"]).removesuffix("s"))
        assert grace > STOP_DEADLINE_SECONDS
        assert service.get("init") is True
    assert len(set(published)) == len(published)
