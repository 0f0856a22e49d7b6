"""A small site for the dashboard's browser tests and README screenshots: loopback sources, the real daemon.

Three sources answer from a loopback feed host (an English RSS feed, a Chinese
one, a trusted Atom feed whose bodies carry hostile markup), their images come
from a second loopback server (another origin, as a post's images would), and
one source points at a port nothing listens on. ``aggregator fetch`` fills the
store once, then ``aggregator run`` serves it, with ``server.dashboard_auth``
set from an environment variable.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from support.daemon import DaemonProcess
from support.helpers import free_port, run_cli, wait_for, write_config
from support.servers import AppServer

USERNAME = "admin"
PASSWORD = "correct horse battery staple"
PASSWORD_ENV = "AGGREGATOR_TEST_DASHBOARD_PASSWORD"

TECH = [
    "Python 3.14 released: free-threaded builds are supported",
    "Faster startup with lazy imports",
    "Reading feeds politely: conditional GET in practice",
    "SQLite in WAL mode for a reader and a writer",
    "Sanitizing HTML with an allowlist",
]
FINANCE = [
    "海关总署：加强关企合作促进后疫情时期国际贸易恢复和发展",
    "央行开展逆回购操作 市场流动性保持合理充裕",
    "前十个月我国货物贸易进出口总值同比增长",
    "多地出台措施支持中小微企业稳定就业",
    "人民币汇率在合理均衡水平上保持基本稳定",
    "新能源汽车产销两旺 产业链加速完善",
]
NEWS = [
    "Markets calm after the rate decision",
    "A quiet week in the city council",
    "Rain expected over the weekend",
]
COLOURS = [(232, 113, 10), (11, 87, 208), (30, 125, 50), (179, 38, 30), (109, 63, 181), (0, 131, 143)]


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour, made here: the tests need images, not files."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


class Files:
    """An ASGI app serving a dict of path -> (media type, bytes), counting requests per path."""

    def __init__(self, files: dict[str, tuple[str, bytes]]) -> None:
        self.files = files
        self.lock = threading.Lock()
        self.requests: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            self.requests.append(scope["path"])
        found = self.files.get(scope["path"])
        if found is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not found"})
            return
        media_type, body = found
        headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def rss(name: str, titles: list[str], now: datetime, images: str, *, first_image: int = 0) -> bytes:
    items = []
    for number, title in enumerate(titles):
        when = format_datetime(now - timedelta(hours=(19 + len(name)) * number + 1), usegmt=True)
        image = f"{images}img/{first_image + number}.png"
        body = (
            f'<p><img src="{image}" alt=""></p><p>{escape(title)}。 This is post {number} of {name}, '
            "kept as a Markdown file and republished in every feed that holds it.</p>"
        )
        items.append(
            f"<item><title>{escape(title)}</title><link>https://{name}.example.org/posts/{number}</link>"
            f"<guid>{name}-{number}</guid><pubDate>{when}</pubDate>"
            f"<description>{escape(body)}</description></item>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>https://{name}.example.org/</link><description>{name}</description>{''.join(items)}"
        "</channel></rss>"
    ).encode()


# A trusted source keeps its HTML as given; the dashboard must still not run any of it.
HOSTILE_BODY = (
    "<p>Body with markup a dashboard must not run.</p>"
    "<script>document.title = 'pwned'</script>"
    "<p onmouseover=\"document.title='pwned'\">Hover me.</p>"
    "<p><a href=\"javascript:document.title='pwned'\">a javascript: link</a></p>"
    '<iframe src="https://evil.example.org/"></iframe>'
)


def atom(name: str, titles: list[str], now: datetime) -> bytes:
    entries = []
    for number, title in enumerate(titles):
        when = (now - timedelta(days=3 * number, hours=2)).isoformat()
        entries.append(
            f"<entry><title>{escape(title)}</title><id>urn:{name}:{number}</id>"
            f'<link href="https://{name}.example.org/{number}"/><updated>{when}</updated>'
            f'<content type="html">{escape(HOSTILE_BODY)}</content></entry>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{name}</title><id>urn:{name}</id><updated>{now.isoformat()}</updated>"
        f"{''.join(entries)}</feed>"
    ).encode()


@dataclass
class DashboardSite:
    daemon: DaemonProcess
    images: AppServer
    image_files: Files
    config: Path
    unreachable: str  # the source nothing answers for
    # The categories the index page should list, with their post counts.
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def url(self, path: str = "") -> str:
        return self.daemon.url(path)

    @property
    def origin(self) -> str:
        return self.daemon.url("").rstrip("/")

    @property
    def image_origin(self) -> str:
        return self.images.base_url.rstrip("/")


@contextmanager
def dashboard_site(directory: Path) -> Iterator[DashboardSite]:
    """The site above, its daemon healthy and its first build done."""
    now = datetime.now(UTC).replace(microsecond=0)
    with ExitStack() as stack:
        image_files = Files(
            {f"/img/{n}.png": ("image/png", solid_png(96, 64, COLOURS[n % len(COLOURS)])) for n in range(20)}
        )
        images = stack.enter_context(AppServer(image_files))
        feeds = Files(
            {
                "/tech.xml": ("application/rss+xml", rss("tech-blog", TECH, now, images.base_url)),
                "/finance.xml": (
                    "application/rss+xml",
                    rss("sina", FINANCE, now, images.base_url, first_image=5),
                ),
                "/news.atom": ("application/atom+xml", atom("world-news", NEWS, now)),
            }
        )
        host = stack.enter_context(AppServer(feeds))
        port = free_port()
        unreachable = "offline-source"
        config = write_config(
            directory,
            [
                {"name": "tech-blog", "url": host.url("tech.xml"), "categories": ["Tech", "Python"]},
                {
                    "name": "新浪财经-国内",
                    "url": host.url("finance.xml"),
                    "categories": ["金融", "新浪财经", "新浪财经－国內"],
                    "author": "新浪财经",
                },
                {"name": "world-news", "url": host.url("news.atom"), "categories": ["News"], "trusted": True},
                {
                    "name": unreachable,
                    "url": f"http://127.0.0.1:{free_port()}/feed.xml",
                    "categories": ["News"],
                },
            ],
            site={
                "title": "My aggregator",
                "description": "Posts gathered from the feeds I follow",
                "base_url": f"http://127.0.0.1:{port}/",
            },
            server={
                "port": port,
                "dashboard_auth": {"username": USERNAME, "password_env": PASSWORD_ENV},
            },
        )
        run_cli("fetch", config=config, check=True)
        daemon = DaemonProcess(config, env={PASSWORD_ENV: PASSWORD})
        stack.callback(daemon.stop)
        daemon.wait_healthy()
        wait_for(lambda: (directory / "feeds" / "index.html").exists(), what="index.html")
        yield DashboardSite(
            daemon=daemon,
            images=images,
            image_files=image_files,
            config=config,
            unreachable=unreachable,
            counts={
                "Tech": len(TECH),
                "Python": len(TECH),
                "金融": len(FINANCE),
                "新浪财经": len(FINANCE),
                "新浪财经－国內": len(FINANCE),
                "News": len(NEWS),
            },
            total=len(TECH) + len(FINANCE) + len(NEWS),
        )
