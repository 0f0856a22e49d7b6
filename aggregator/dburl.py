"""The ``index:`` setting: a PostgreSQL URL, checked, and shown only with its password hidden.

``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`` (``postgres://`` too, and libpq's query
options such as ``?sslmode=require``). Every message about a URL, valid or not, goes
through :func:`redact`, so a password never reaches an error, a log line or a status page.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")
SHAPE = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB"
HIDDEN = "***"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (the rest kept, to say which server is meant)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # Up to the last "@": a password may hold a "/" or "@" its writer did not percent-encode.
    userinfo, at, after = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return url
    return f"{scheme}://{user}:{HIDDEN}@{after}"


def check_postgres_url(url: str) -> str:
    """``url`` unchanged when it names a user, a host and a database; ValueError (password hidden) if not."""
    shown = redact(url.strip())
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        # urllib's own message quotes the raw address, password and all.
        raise ValueError(
            f"{shown} is not a URL such as {SHAPE} (a bad port; percent-encode any / or @ in the password)"
        ) from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{shown} is not a URL such as {SHAPE} (the scheme must be postgresql://)")
    if not parts.username:
        raise ValueError(f"{shown} names no user (a URL such as {SHAPE})")
    if not parts.hostname:
        raise ValueError(f"{shown} names no host (a URL such as {SHAPE})")
    if port == 0:
        raise ValueError(f"{shown}: the port must be 1-65535")
    database = unquote(parts.path.removeprefix("/"))
    if not database or "/" in database:
        raise ValueError(f"{shown} names no database (a URL such as {SHAPE})")
    if parts.fragment:
        raise ValueError(f"{shown}: a database URL has no #fragment")
    return urlunsplit(parts)
