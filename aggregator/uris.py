"""Ids and links as the published feeds carry them: URIs of a shape a strict validator accepts.

Upstream feeds hand us ids and URLs of every kind: ``urn:uuid:`` values that
are no UUID, bare words, spaces in enclosure URLs, Chinese paths. A reader (and
the W3C feed validator) wants an Atom id to be a URI of a known shape and a
link to be a URI. Two pure functions give that:

- :func:`atom_id`: the upstream id when it has one of the shapes below,
  its URI form when it is an http(s) IRI, else a ``urn:uuid`` of our own made
  from the source and the id (RFC 4122 name-based, so the same post always
  gets the same id, in every build and on every machine).
- :func:`uri_from_iri`: an IRI mapped to a URI (RFC 3987 section 3.1): the
  host in IDNA, every other character a URI may not hold percent-encoded as
  UTF-8, existing ``%XX`` escapes kept. A URI comes back unchanged.

The shapes (:func:`is_known_id`) are those the validator checks, which are
narrower than the RFCs in places (a URN's specific string holds no ``/``);
where they differ the narrower one is used, so what passes here passes both.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

# Names an upstream id in our own ids: a fixed namespace, so the ids never change.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/aggregator-project/aggregator")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes
_VARIANT = "89ab"  # RFC 4122 4.1.1: the two top bits 10, then the digest's next two

# RFC 3986 section 2: unreserved and reserved characters, and "%" of an escape.
_URI_CHARS = "A-Za-z0-9;/?:@&=+$.\\-_!~*'()%,#"
# An absolute http(s) URI: a host (an IPv6 literal, or anything but a path), then URI characters.
_HTTP_URI = re.compile(
    rf"https?://(\[[0-9A-Fa-f:.]+\]|[{_URI_CHARS.replace('/', '')}])[{_URI_CHARS}]*", re.IGNORECASE
)
_URI_TAIL = re.compile(rf"[{_URI_CHARS}]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 4122: 8-4-4-4-12 hexadecimal digits.
_UUID_URN = re.compile(r"urn:uuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)
# RFC 8141: urn:<NID>:<NSS>, the NID 2 to 32 letters, digits and hyphens.
_URN = re.compile(r"urn:[a-z0-9][a-z0-9-]{1,31}:([a-z0-9()+,.:=@;$_!*'-]|%[0-9a-f]{2})+", re.IGNORECASE)
# RFC 4151: tag:<authority>,<date>:<specific>[#<fragment>].
_TAG = re.compile(
    r"tag:([a-z0-9._-]+?@)?[a-z0-9.-]+?,\d{4}(-\d\d(-\d\d)?)?:"
    r"[0-9a-zA-Z;/?:@&=+$._!~*'()%,-]*(#[0-9a-zA-Z;/?:@&=+$._!~*'()%,-]*)?"
)
# What a URI may hold besides the brackets of an IPv6 host; "%" is checked on its own.
_SAFE = ";/?:@&=+$,-_.!~*'()#%"


def is_known_id(value: str) -> bool:
    """An http(s) URL, a tag URI, a UUID URN or another URN, each well formed and in ASCII."""
    scheme = value.partition(":")[0].lower()
    if scheme in ("http", "https"):
        return _is_http_uri(value)
    if scheme == "tag":
        return _TAG.fullmatch(value) is not None
    if scheme == "urn":
        if value[:9].lower() == "urn:uuid:":
            return _UUID_URN.fullmatch(value) is not None
        return _URN.fullmatch(value) is not None
    return False


def _is_http_uri(value: str) -> bool:
    """An absolute http(s) URI with a host, of URI characters only, every ``%`` an escape."""
    return _HTTP_URI.fullmatch(value) is not None and ("%" not in value or not _BAD_ESCAPE.search(value))


def atom_id(source: str, entry_id: str) -> str:
    """The entry's Atom id: its own when that is a known shape (or an http(s) IRI), else ours."""
    if is_known_id(entry_id):
        return entry_id
    if entry_id[:4].lower() == "http":
        mapped = uri_from_iri(entry_id)
        if is_known_id(mapped):
            return mapped
    return own_id(source, entry_id)


def own_id(source: str, entry_id: str) -> str:
    """``urn:uuid:`` named by the source and the upstream id: ``uuid.uuid5(ID_NAMESPACE, name)``.

    RFC 4122 4.3 written out (the ``UUID`` object cost a third of an item's rendering): the SHA-1
    of namespace and name, version 5 in the 13th digit, the variant in the top bits of the 17th.
    """
    name = (source + "\x00" + entry_id).encode("utf-8", "surrogatepass")
    h = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).hexdigest()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def uri_from_iri(value: str) -> str:
    """The URI an IRI (or a sloppy URL) stands for; a URI is returned unchanged.

    The host goes to IDNA (``例子.cn`` -> ``xn--fsqu00a.cn``), so it still
    resolves; everything else a URI may not hold (spaces, non-ASCII, ``<>"{}|\\^```
    and stray ``%``) is percent-encoded from UTF-8 (RFC 3987 3.1).
    """
    if value.isascii() and _URI_TAIL.fullmatch(value) and ("%" not in value or not _BAD_ESCAPE.search(value)):
        return value
    try:
        parts = urlsplit(value)
    except ValueError:  # a bracket that is no IPv6 host
        return _escaped(value)
    userinfo, at, host_port = parts.netloc.rpartition("@")
    if not host_port.startswith("["):
        host, colon, port = host_port.partition(":")
        if not host.isascii():
            # A label IDNA refuses stays as it is, to be percent-encoded (RFC 3986 reg-name).
            with contextlib.suppress(UnicodeError):
                host = host.encode("idna").decode("ascii")
        host_port = host + colon + port
    netloc = _escaped(userinfo + at) + quote(_BAD_ESCAPE.sub("%25", host_port), safe=_SAFE + "[]")
    path, query, fragment = (_escaped(part) for part in (parts.path, parts.query, parts.fragment))
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _escaped(text: str) -> str:
    return quote(_BAD_ESCAPE.sub("%25", text), safe=_SAFE)
