"""The archived posts through a real Hexo: ``hexo generate`` over the posts and media folders,
symlinked into a site's ``source/`` as the README's "Media archive" says, and every image of
every generated page resolves to the archived copy.

Hexo is installed with npm into this test's own temporary folder; the test is skipped (with
the reason) when npm is missing or the install fails, e.g. without access to the registry.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.imageserver import PHOTO, image_server
from support.mediafeeds import fetch, media_config, write_feed

HEXO_PACKAGES = {"hexo": "^7", "hexo-renderer-marked": "^6", "hexo-renderer-ejs": "^2"}
POST_LAYOUT = '<html><body><img class="headimg" src="<%= page.headimg %>"><%- page.content %></body></html>\n'


def install_hexo(site: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot check the posts with hexo generate")
    site.mkdir(parents=True)
    (site / "package.json").write_text(
        json.dumps(
            {"name": "media-test", "private": True, "hexo": {"version": ""}, "dependencies": HEXO_PACKAGES}
        )
    )
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=site, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("npm install of hexo took over 10 minutes")
    hexo = site / "node_modules" / ".bin" / "hexo"
    if done.returncode != 0 or not hexo.exists():
        pytest.skip(f"npm install of hexo failed: {done.stderr.strip()[-300:]}")
    return hexo


def test_hexo_generate_renders_the_archived_images(tmp_path: Path) -> None:
    hexo = install_hexo(tmp_path / "site")
    server, host = image_server()
    with server:
        photo, strict = server.url("a/photo.jpg"), server.url("strict.png")
        write_feed(
            tmp_path / "pics.xml",
            [
                {
                    "id": "one",
                    "title": "One",
                    "body": f'<p>a {{b}}</p><img src="{photo}" srcset="{strict} 2x">',
                },
                {"id": "two", "title": "Two", "body": "<p>Two</p>", "enclosure": (strict, "image/png")},
            ],
        )
        fetch(media_config(tmp_path, [{"name": "pics", "url": "pics.xml"}]))
    assert host.requests["/a/photo.jpg"] == 1

    site = tmp_path / "site"
    (site / "_config.yml").write_text(
        "title: test\nurl: http://example.org\ntheme: plain\npermalink: :year/:month/:day/:title/\n"
    )
    layout = site / "themes" / "plain" / "layout"
    layout.mkdir(parents=True)
    (layout / "post.ejs").write_text(POST_LAYOUT)
    (layout / "index.ejs").write_text(POST_LAYOUT)
    (site / "source").mkdir()
    (site / "source" / "_posts").symlink_to(tmp_path / "posts")
    (site / "source" / "media").symlink_to(tmp_path / "media")
    done = subprocess.run([str(hexo), "generate"], cwd=site, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout + done.stderr

    pages = sorted((site / "public").rglob("index.html"))
    assert len(pages) == 2, done.stdout
    seen = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert server.base_url not in text  # every image is the archived copy
        for attribute in re.findall(r'(?:src|srcset)="([^"]+)"', text):
            for candidate in attribute.split(","):
                url = candidate.split()[0]
                assert url.startswith("/media/"), url
                served = site / "public" / url.lstrip("/")
                assert served.read_bytes() == (tmp_path / "media" / url.removeprefix("/media/")).read_bytes()
                seen += 1
    assert seen == 4  # one: the lead image, src and srcset; two: the lead image from its enclosure
    assert PHOTO in {p.read_bytes() for p in (site / "public" / "media").rglob("*.jpg")}
    assert "a &#123;b&#125;" in pages[0].read_text(encoding="utf-8") + pages[1].read_text(encoding="utf-8")
