"""``server.dashboard_auth``: HTTP basic auth (RFC 7617) in front of /status and the post pages.

The feeds, index.html, the OPML, /healthz and /metrics stay public: readers and
monitors do not log in. Credentials are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass

from aggregator.config import DashboardAuthConfig
from aggregator.errors import ConfigError

REALM = "aggregator dashboard"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=...)"


def credentials(
    config: DashboardAuthConfig | None, environ: dict[str, str] | None = None
) -> Credentials | None:
    """The credentials the config asks for (None: the dashboard is open); a missing variable is an error."""
    if config is None:
        return None
    password = config.password
    if config.password_env is not None:
        password = (os.environ if environ is None else environ).get(config.password_env)
        if not password:
            raise ConfigError(
                f"server.dashboard_auth.password_env: the environment variable {config.password_env} "
                "is not set (or empty)"
            )
    assert password is not None  # the config holds one of the two
    return Credentials(config.username, password)


def authorized(header: str | None, expected: Credentials | None) -> bool:
    """Whether an ``Authorization`` header carries ``expected`` (always, when nothing is expected)."""
    if expected is None:
        return True
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    username, colon, password = decoded.partition(":")
    # Both compared, always: the time taken does not tell which one was wrong.
    same_user = secrets.compare_digest(username.encode(), expected.username.encode())
    same_password = secrets.compare_digest(password.encode(), expected.password.encode())
    return bool(colon) and same_user and same_password
