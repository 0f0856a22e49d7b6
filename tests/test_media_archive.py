"""The media archive end to end: the real CLI over a local feed whose posts use images on a
loopback image host with the faults image hosts have (tests/support/imageserver.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.helpers import run_cli, write_config
from support.imageserver import HUGE_SIZE, PHOTO, STRICT, ImageHost, image_server
from support.mediafeeds import fetch, media_config, media_files, posts_by_id, write_feed
from support.servers import AppServer

from aggregator.media.archive import digest_of
from aggregator.media.html import local_path

PHOTO_LOCAL = local_path(digest_of(PHOTO), "jpg")
STRICT_LOCAL = local_path(digest_of(STRICT), "png")


@pytest.fixture
def images() -> Iterator[tuple[AppServer, ImageHost]]:
    server, host = image_server()
    with server:
        yield server, host


def test_an_image_under_two_urls_is_one_file_and_the_posts_point_at_it(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, host = images
    photo, same = server.url("a/photo.jpg"), server.url("b/same.jpg")
    write_feed(
        tmp_path / "one.xml", [{"id": "p1", "body": f'<p>One</p><img src="{photo}" srcset="{same} 2x">'}]
    )
    write_feed(tmp_path / "two.xml", [{"id": "p2", "body": "<p>Two</p>", "enclosure": (same, "image/jpeg")}])
    config = media_config(tmp_path, [{"name": "one", "url": "one.xml"}, {"name": "two", "url": "two.xml"}])
    fetch(config)

    assert media_files(tmp_path) == [PHOTO_LOCAL.removeprefix("/media/")]
    assert (tmp_path / "media" / PHOTO_LOCAL.removeprefix("/media/")).read_bytes() == PHOTO
    posts = posts_by_id(tmp_path)
    _, one = posts["p1"]
    assert f'src="{PHOTO_LOCAL}" srcset="{PHOTO_LOCAL} 2x"' in one
    assert f"  {photo}: {PHOTO_LOCAL}" in one and f"  {same}: {PHOTO_LOCAL}" in one  # the originals, kept
    assert f"headimg: {PHOTO_LOCAL}" in one and f"thumbnail: {PHOTO_LOCAL}" in one
    path_two, two = posts["p2"]
    assert f"- url: {PHOTO_LOCAL}" in two and f"headimg: {PHOTO_LOCAL}" in two
    # Each URL asked once, with no Referer.
    assert host.requests["/a/photo.jpg"] == 1 and host.requests["/b/same.jpg"] == 1
    assert host.referers["/a/photo.jpg"] == [None]

    # Published feeds use absolute URLs of the copies.
    rss = (tmp_path / "feeds" / "all" / "rss.xml").read_text(encoding="utf-8")
    absolute = "http://127.0.0.1:8080" + PHOTO_LOCAL
    assert absolute in rss and photo not in rss.split("<item>")[1]
    feed = json.loads((tmp_path / "feeds" / "all" / "feed.json").read_text(encoding="utf-8"))
    assert {item.get("image") for item in feed["items"]} == {absolute}

    # A second run: nothing new, nothing requested, nothing rewritten.
    before = path_two.read_bytes(), path_two.stat().st_mtime_ns
    os.utime(tmp_path / "one.xml")  # the local feed reads as changed: the same entries come again
    fetch(config)
    assert host.requests["/a/photo.jpg"] == 1 and host.requests["/b/same.jpg"] == 1
    assert (path_two.read_bytes(), path_two.stat().st_mtime_ns) == before
    assert run_cli("verify", config=config).returncode == 0


def test_images_that_cannot_be_archived_never_hold_back_their_posts(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, host = images
    broken = {
        "missing": server.url("missing.jpg"),
        "huge": server.url("huge.jpg"),
        "fake": server.url("fake.jpg"),
        "svg": server.url("vector.svg"),
        "slow": server.url("slow.jpg"),
    }
    write_feed(
        tmp_path / "bad.xml", [{"id": name, "body": f'<img src="{url}">'} for name, url in broken.items()]
    )
    config = media_config(tmp_path, [{"name": "bad", "url": "bad.xml"}], deadline="3s")
    result = run_cli("fetch", "--json", config=config)
    assert result.returncode == 0, result.stderr
    # The slow image was cut off at the 3 s deadline, not dripped to its end (over 30 s).
    assert json.loads(result.stdout)["sources"][0]["duration"] < 15
    posts = posts_by_id(tmp_path)
    assert sorted(posts) == sorted(broken)  # every post written
    for name, url in broken.items():
        text = posts[name][1]
        assert f'src="{url}"' in text, name  # the original stays
        assert "media: {}" in text, name
    assert media_files(tmp_path) == []
    assert host.requests["/huge.jpg"] == 1 and HUGE_SIZE > 100 * 1024

    status = run_cli("status", "--json", config=config)
    report = {row["name"]: row for row in json.loads(status.stdout)}
    assert report["bad"]["media_failures"] == 5
    assert report["bad"]["media_last_error"]
    text_status = run_cli("status", config=config).stdout
    assert "media: bad: 5 images not archived yet" in text_status
    errors = _errors_by_url(tmp_path)
    assert "HTTP 404" in errors[broken["missing"]]
    assert "exceeds the 102400-byte limit" in errors[broken["huge"]]
    assert "bytes are not an image" in errors[broken["fake"]]
    assert "SVG" in errors[broken["svg"]]
    assert "3s deadline" in errors[broken["slow"]] or "within the 3s" in errors[broken["slow"]]

    # Backoff: an immediate second run asks for none of them again.
    asked = dict(host.requests)
    os.utime(tmp_path / "bad.xml")
    fetch(config)
    assert dict(host.requests) == asked


def _errors_by_url(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "data" / "index.sqlite3") as db:
        return dict(db.execute("SELECT url, last_error FROM media_urls WHERE local IS NULL"))


def test_no_referer_by_default_and_a_sources_media_referer_is_sent(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, host = images
    strict = server.url("strict.png")
    write_feed(tmp_path / "plain.xml", [{"id": "plain", "body": f'<img src="{strict}">'}])
    write_feed(tmp_path / "refer.xml", [{"id": "refer", "body": f'<img src="{strict}">'}])
    config = media_config(
        tmp_path,
        [
            {"name": "refer", "url": "refer.xml", "media_referer": "https://my.site.example/"},
        ],
    )
    fetch(config)
    assert host.referers["/strict.png"] == ["https://my.site.example/"]
    assert f'src="{strict}"' in posts_by_id(tmp_path)["refer"][1]  # refused: the original stays

    config = media_config(tmp_path, [{"name": "plain", "url": "plain.xml"}])
    fetch(config)
    assert host.referers["/strict.png"][-1] is None
    assert f'src="{STRICT_LOCAL}"' in posts_by_id(tmp_path)["plain"][1]


def test_a_failed_image_is_retried_when_due_and_the_post_then_points_at_the_copy(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, host = images
    flaky = server.url("flaky.png")
    write_feed(tmp_path / "f.xml", [{"id": "f1", "body": f'<p>F</p><img src="{flaky}">'}])
    config = media_config(tmp_path, [{"name": "f", "url": "f.xml"}])
    fetch(config)
    path, text = posts_by_id(tmp_path)["f1"]
    assert f'src="{flaky}"' in text and host.requests["/flaky.png"] == 1
    host.flaky_fixed = True
    fetch(config)  # not due yet (ten minutes)
    assert host.requests["/flaky.png"] == 1
    with sqlite3.connect(tmp_path / "data" / "index.sqlite3") as db:
        (next_try,) = db.execute("SELECT next_try_ts FROM media_urls WHERE url=?", (flaky,)).fetchone()
        assert 500 < next_try - time.time() < 700
        db.execute("UPDATE media_urls SET next_try_ts=0")  # ten minutes later
    fetch(config)  # the feed is unchanged (304-like): the retry still runs
    assert host.requests["/flaky.png"] == 2
    text = path.read_text(encoding="utf-8")
    copy = media_files(tmp_path)
    assert len(copy) == 1 and f'src="/media/{copy[0]}"' in text and f"  {flaky}: /media/{copy[0]}" in text
    rss = (tmp_path / "feeds" / "source" / "f" / "rss.xml").read_text(encoding="utf-8")
    assert f"http://127.0.0.1:8080/media/{copy[0]}" in rss
    assert "images not archived" not in run_cli("status", config=config).stdout
    assert run_cli("verify", config=config).returncode == 0


def test_verify_names_missing_and_corrupt_copies(tmp_path: Path, images: tuple[AppServer, ImageHost]) -> None:
    server, _host = images
    write_feed(tmp_path / "v.xml", [{"id": "v1", "body": f'<img src="{server.url("a/photo.jpg")}">'}])
    config = media_config(tmp_path, [{"name": "v", "url": "v.xml"}])
    fetch(config)
    copy = tmp_path / "media" / PHOTO_LOCAL.removeprefix("/media/")
    copy.write_bytes(b"\xff\xd8\xff other bytes")
    result = run_cli("verify", config=config)
    assert (
        result.returncode == 1
        and f"media {PHOTO_LOCAL}: the file's SHA-256 does not match its name" in result.stdout
    )
    copy.unlink()
    result = run_cli("verify", config=config)
    assert result.returncode == 1 and f"media {PHOTO_LOCAL} is referenced, but" in result.stdout


def test_reindex_rebuilds_the_media_map_from_the_post_files(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, host = images
    write_feed(tmp_path / "r.xml", [{"id": "r1", "body": f'<img src="{server.url("a/photo.jpg")}">'}])
    config = media_config(tmp_path, [{"name": "r", "url": "r.xml"}])
    fetch(config)
    path, before = posts_by_id(tmp_path)["r1"]
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (tmp_path / "data" / name).unlink(missing_ok=True)
    assert run_cli("reindex", config=config).returncode == 0
    assert run_cli("verify", config=config).returncode == 0
    # The entry is unchanged upstream (the rewrite is not taken for a change): the post stays as it is.
    os.utime(tmp_path / "r.xml")
    report = json.loads(run_cli("fetch", "--json", config=config).stdout)
    assert [(s["name"], s["outcome"], s["updated"]) for s in report["sources"]] == [("r", "ok", 0)]
    assert path.read_text(encoding="utf-8") == before
    assert host.requests["/a/photo.jpg"] == 1
    # The rebuilt index knows the post uses the copy (from its front matter): verify misses it.
    (tmp_path / "media" / PHOTO_LOCAL.removeprefix("/media/")).unlink()
    result = run_cli("verify", config=config)
    assert result.returncode == 1 and f"r/r1: media {PHOTO_LOCAL} is referenced, but" in result.stdout


def test_prune_removes_the_copies_no_post_references(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, _host = images
    only_old = server.url("n/old.png")
    shared = server.url("a/photo.jpg")
    items = [
        {"id": "old", "body": f'<img src="{only_old}"><img src="{shared}">'},
        {"id": "new", "body": f'<img src="{shared}">'},
    ]
    write_feed(tmp_path / "p.xml", items)
    config = media_config(tmp_path, [{"name": "p", "url": "p.xml"}])
    fetch(config)
    assert len(media_files(tmp_path)) == 2
    hour_ago = time.time() - 7200  # copies younger than an hour are never collected
    for name in media_files(tmp_path):
        os.utime(tmp_path / "media" / name, (hour_ago, hour_ago))
    config = write_config(
        tmp_path, [{"name": "p", "url": "p.xml", "retention": {"max_posts": 1}}], paths={"media": "media"}
    )
    result = run_cli("prune", config=config)
    assert result.returncode == 0 and "pruned 1 posts, 1 unreferenced media files" in result.stdout
    assert media_files(tmp_path) == [PHOTO_LOCAL.removeprefix("/media/")]
    assert run_cli("verify", config=config).returncode == 0


def test_the_daemons_media_route_serves_copies_with_immutable_caching(tmp_path: Path) -> None:
    import httpx

    from aggregator.serve import create_app

    digest = digest_of(PHOTO)
    (tmp_path / "media" / digest[:2]).mkdir(parents=True)
    (tmp_path / "media" / PHOTO_LOCAL.removeprefix("/media/")).write_bytes(PHOTO)
    (tmp_path / "media" / digest[:2] / "notes.txt").write_text("not a copy")
    with AppServer(create_app(tmp_path / "feeds", media_dir=tmp_path / "media")) as server:
        response = httpx.get(server.url(PHOTO_LOCAL))
        assert response.status_code == 200 and response.content == PHOTO
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["etag"] == f'"{digest}"'
        again = httpx.get(server.url(PHOTO_LOCAL), headers={"If-None-Match": f'"{digest}"'})
        assert again.status_code == 304 and again.content == b""
        assert httpx.get(server.url(f"media/{digest[:2]}/notes.txt")).status_code == 404
        assert httpx.get(server.url("media/../aggregator.yaml")).status_code == 404


def test_archiving_is_per_source_and_a_source_with_it_off_is_left_as_it_was(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, host = images
    write_feed(tmp_path / "on.xml", [{"id": "on1", "body": f'<img src="{server.url("a/photo.jpg")}">'}])
    write_feed(tmp_path / "off.xml", [{"id": "off1", "body": f'<img src="{server.url("strict.png")}">'}])
    config = write_config(
        tmp_path,
        [{"name": "on", "url": "on.xml", "media": "archive"}, {"name": "off", "url": "off.xml"}],
        paths={"media": "media"},
    )  # defaults.media is off
    fetch(config)
    posts = posts_by_id(tmp_path)
    assert f'src="{PHOTO_LOCAL}"' in posts["on1"][1]
    assert f'src="{server.url("strict.png")}"' in posts["off1"][1] and "\nmedia:" not in posts["off1"][1]
    assert host.requests["/strict.png"] == 0 and media_files(tmp_path) == [
        PHOTO_LOCAL.removeprefix("/media/")
    ]


def test_the_daemon_publishes_absolute_copies_and_serves_them(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    import re
    import signal
    import subprocess
    import sys

    import httpx
    from support.helpers import REPO, free_port, wait_for

    server, _host = images
    write_feed(tmp_path / "d.xml", [{"id": "d1", "body": f'<img src="{server.url("a/photo.jpg")}">'}])
    port = free_port()
    config = write_config(
        tmp_path,
        [{"name": "d", "url": "d.xml"}],
        site={"title": "Test site", "base_url": f"http://127.0.0.1:{port}/"},
        paths={"media": "media"},
        defaults={"media": "archive"},
        server={"host": "127.0.0.1", "port": port},
    )
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "-c", str(config), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:

        def published() -> str | None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/all/rss.xml", timeout=2)
            except httpx.HTTPError:
                return None
            found = re.search(rf"http://127\.0\.0\.1:{port}/media/[0-9a-f/]+\.jpg", response.text)
            return found.group(0) if response.status_code == 200 and found else None

        url = wait_for(published, timeout=30, what="the feed with the archived image")
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200 and response.content == PHOTO
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["etag"] == f'"{digest_of(PHOTO)}"'
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=25)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            log.close()


def test_a_feed_on_a_public_address_cannot_make_us_fetch_images_from_a_private_one(
    images: tuple[AppServer, ImageHost],
) -> None:
    import asyncio

    from aggregator.errors import RedirectError
    from aggregator.fetch import Fetcher
    from aggregator.media.download import download

    server, host = images

    async def public_resolver(name: str) -> tuple[str, ...]:
        return ("93.184.216.34",) if name == "feed.example" else ()

    async def attempt(**options: Any) -> bytes:
        fetcher = Fetcher("test", resolver=public_resolver)
        try:
            return (await download(fetcher, server.url("a/photo.jpg"), max_media=2**20, **options)).data
        finally:
            await fetcher.aclose()

    with pytest.raises(RedirectError, match="private address"):
        asyncio.run(attempt(origin="https://feed.example/feed.xml"))
    assert host.requests["/a/photo.jpg"] == 0  # refused before any request
    assert asyncio.run(attempt(origin="https://feed.example/feed.xml", allow_private_redirects=True)) == PHOTO
    assert asyncio.run(attempt(origin=None)) == PHOTO  # a local feed file


def test_many_slow_images_hold_their_post_back_one_deadline_not_one_each(
    tmp_path: Path, images: tuple[AppServer, ImageHost]
) -> None:
    server, host = images
    slow = [server.url(f"slow.jpg?copy={n}") for n in range(4)]
    write_feed(tmp_path / "s.xml", [{"id": "s1", "body": "".join(f'<img src="{url}">' for url in slow)}])
    config = media_config(
        tmp_path, [{"name": "s", "url": "s.xml"}], per_host=1, deadline="3s"
    )  # one at a time
    report = json.loads(run_cli("fetch", "--json", config=config).stdout)
    assert report["sources"][0]["new"] == 1
    assert report["sources"][0]["duration"] < 10  # one 3 s deadline for the lot (one each: over 12 s)
    assert all(f'src="{html_escaped(url)}"' in posts_by_id(tmp_path)["s1"][1] for url in slow)
    errors = _errors_by_url(tmp_path)
    assert sorted(errors) == sorted(slow)
    # The queued ones were cut off by the save's budget, not each by a deadline of its own.
    assert sum("not downloaded within the 3s one save gives its images" in e for e in errors.values()) >= 3
    assert host.requests["/slow.jpg"] <= 2  # those still queued behind the per-host limit never started


def html_escaped(url: str) -> str:
    return url.replace("&", "&amp;")
