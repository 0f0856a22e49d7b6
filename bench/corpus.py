"""A deterministic corpus of feeds, the same bytes on every run for the same spec.

Feed ``i`` has one of four formats (RSS 2.0 with content:encoded, RSS 2.0 with the
HTML in description, Atom 1.0, RSS 1.0), a source name and a place in a two-level
category hierarchy (10 top categories with 9 children each: with 1,000 sources the
config has 1 + 100 + 1,000 = 1,101 feeds to publish). Its entries are numbered
``k = extra .. extra + entries - 1``; ``extra`` is how many entries it has gained
since the corpus was written (the changed-feeds cycle writes feeds with
``extra=1``: one new entry on top, the oldest gone). Entry dates spread over a
month, newest first. Bodies are 1-8 KB of HTML put together from a pool of
paragraphs (English, and Chinese for every third feed) with images, relative
links, now and then a ``<pre><code>`` block full of ``{}``, a ``<script>`` and an
inline style, so the sanitizer has real work.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

GENERATOR_VERSION = 3
FORMATS = ("rss2-content", "rss2", "atom", "rss1")
MEDIA_TYPES = {
    "rss2-content": "application/rss+xml",
    "rss2": "application/rss+xml",
    "atom": "application/atom+xml",
    "rss1": "application/rdf+xml",
}
START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
TOP_CATEGORIES = (
    "金融",
    "Technology",
    "科学",
    "Sports",
    "文化",
    "Politics",
    "健康",
    "Travel",
    "教育",
    "Business",
)
CHILDREN_PER_TOP = 9


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_EN_WORDS = _words(
    "market growth policy report network system data model analysis release update security "
    "performance research team project design service platform energy climate health study "
    "community budget quarter investment software hardware science experiment result season "
    "league match player coach museum exhibition festival journey city river mountain school "
    "student teacher course election council minister reform trade export import supply chain "
    "the of and to in for with on by from at as is was are were has have will can new first "
    "last year week today local global national open source language compiler database cache"
)
_ZH_PHRASES = _words(
    "海关总署 加强 关企合作 促进 后疫情时期 国际贸易 恢复 发展 中新网 记者 举行 跨国公司 领导人 "
    "峰会 闭门会 贸易便利化 领域 改革 深入推动 综合保税区 高质量发展 宣讲 解读 围绕 研讨交流 "
    "倾听 意见建议 回应 关注诉求 进出口 同比增长 总值 创历史新高 上半年 外贸 延续 良好势头 "
    "科学家 研究 发现 新技术 人工智能 数据 模型 教育 学校 学生 老师 课程 健康 医院 医生 旅游 "
    "城市 河流 山脉 文化 博物馆 展览 节日 体育 比赛 球队 教练 金融 市场 投资 预算 季度"
)
_CODE_SNIPPETS = (
    "function add(a, b) { return { sum: a + b }; }",
    "const config = { retries: 3, backoff: { base: 2, cap: 60 } };",
    "for (let i = 0; i < n; i++) { if (xs[i]) { total += xs[i]; } }",
    'fn main() { let v: Vec<u8> = vec![]; println!("{}", v.len()); }',
    "{% raw %}{{ page.title }}{% endraw %} and ${HOME} and {0}.format(x)",
    "struct Point { int x; int y; }; Point p = { 1, 2 };",
)
_TAGS = (
    "analysis",
    "breaking",
    "opinion",
    "数据",
    "interview",
    "视频",
    "long-read",
    "评论",
    "photo",
    "briefing",
)


@dataclass(frozen=True)
class CorpusSpec:
    feeds: int = 1000
    entries: int = 50
    seed: int = 8

    @property
    def name(self) -> str:
        return f"{self.feeds}x{self.entries}-s{self.seed}-v{GENERATOR_VERSION}"


@dataclass(frozen=True)
class FeedInfo:
    index: int
    format: str
    source: str
    categories: tuple[str, ...]
    filename: str
    chinese: bool


def feed_info(index: int) -> FeedInfo:
    share = index % 20  # 35% RSS 2.0 with content:encoded, 25% RSS 2.0, 25% Atom, 15% RSS 1.0
    fmt = FORMATS[0] if share < 7 else FORMATS[1] if share < 12 else FORMATS[2] if share < 17 else FORMATS[3]
    chinese = index % 3 == 0
    source = f"新闻源-{index:04d}" if index % 7 == 0 else f"source-{index:04d}"
    top = TOP_CATEGORIES[index % len(TOP_CATEGORIES)]
    child = (index // len(TOP_CATEGORIES)) % CHILDREN_PER_TOP
    child_name = f"{top}－{child + 1}" if chinese or not top.isascii() else f"{top} {child + 1}"
    return FeedInfo(index, fmt, source, (top, child_name), f"{index:04d}-{fmt}.xml", chinese)


class _Pool:
    """Paragraphs made once per spec, so a 250 MB corpus is written in seconds, not minutes."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"pool-{seed}")
        self.en = [self._english(rng) for _ in range(300)]
        self.zh = [self._chinese(rng) for _ in range(300)]

    @staticmethod
    def _english(rng: random.Random) -> str:
        words = [rng.choice(_EN_WORDS) for _ in range(rng.randint(30, 120))]
        words[0] = words[0].capitalize()
        if rng.random() < 0.4:
            at = rng.randrange(len(words))
            words[at] = f'<a href="/topics/{words[at]}">{words[at]}</a>'
        if rng.random() < 0.3:
            at = rng.randrange(len(words))
            words[at] = f"<strong>{words[at]}</strong>"
        return "<p>" + " ".join(words) + ".</p>"

    @staticmethod
    def _chinese(rng: random.Random) -> str:
        text = "".join(rng.choice(_ZH_PHRASES) for _ in range(rng.randint(20, 90)))
        return f'<p cms-style="font-L">\u3000\u3000{text}。</p>'


_POOLS: dict[int, _Pool] = {}


def _pool(seed: int) -> _Pool:
    if seed not in _POOLS:
        _POOLS[seed] = _Pool(seed)
    return _POOLS[seed]


@dataclass(frozen=True)
class Entry:
    k: int
    title: str
    link: str
    guid: str
    author: str
    date: datetime
    tags: tuple[str, ...]
    summary: str
    body: str


def entry(spec: CorpusSpec, info: FeedInfo, k: int) -> Entry:
    rng = random.Random(f"{spec.seed}:{info.index}:{k}")
    pool = _pool(spec.seed)
    host = f"site{info.index:04d}.example.com"
    step = SPAN / spec.entries
    date = START + step * k + timedelta(seconds=rng.randrange(int(step.total_seconds()) or 1))
    paragraphs = pool.zh if info.chinese else pool.en
    target = rng.randint(1000, 8000)
    parts = [
        f'<div class="img_wrapper"><img src="https://img.{host}/{k}/lead.jpg" alt="photo {k}" '
        f'style="max-width: 640px;"><span class="img_descr">Photo {k}</span></div>'
    ]
    size = len(parts[0])
    while size < target:
        roll = rng.random()
        if roll < 0.08:
            chunk = f"<pre><code>{html.escape(rng.choice(_CODE_SNIPPETS), quote=False)}</code></pre>"
        elif roll < 0.14:
            chunk = f'<p><img src="/images/{k}/{size}.png" alt="figure" width="400" height="300"></p>'
        elif roll < 0.16:
            chunk = "<script>track('view');</script>"
        else:
            chunk = rng.choice(paragraphs)
        parts.append(chunk)
        size += len(chunk.encode())
    body = "\n".join(parts)
    if info.chinese:
        title = f"{rng.choice(_ZH_PHRASES)}{rng.choice(_ZH_PHRASES)}：第{k}号 {info.source}"
    else:
        title = f"{rng.choice(_EN_WORDS).capitalize()} {rng.choice(_EN_WORDS)} report #{k} from {info.source}"
    return Entry(
        k=k,
        title=title,
        link=f"https://{host}/posts/{date:%Y/%m}/{k}.html",
        guid=f"{host}-entry-{k}",
        author=f"Author {rng.randint(1, 20)}",
        date=date,
        tags=tuple(rng.sample(_TAGS, rng.randint(0, 3))),
        summary=html.escape(title) + " - a summary of the article.",
        body=body,
    )


def render_feed(spec: CorpusSpec, info: FeedInfo, extra: int = 0) -> bytes:
    """Feed ``info`` with its newest ``spec.entries`` entries after gaining ``extra`` new ones."""
    entries = [entry(spec, info, k) for k in range(extra + spec.entries - 1, extra - 1, -1)]
    render = {"rss2-content": _rss2, "rss2": _rss2, "atom": _atom, "rss1": _rss1}[info.format]
    return render(info, entries).encode()


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _rss2(info: FeedInfo, entries: list[Entry]) -> str:
    content = info.format == "rss2-content"
    host = f"https://site{info.index:04d}.example.com/"
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>\n'
        f"<title>{_esc(info.source)}</title>\n<link>{host}</link>\n"
        f"<description>Feed number {info.index}</description>\n<language>"
        f"{'zh-cn' if info.chinese else 'en'}</language>\n"
    ]
    for e in entries:
        guid = f'<guid isPermaLink="false">{e.guid}</guid>' if e.k % 2 else f"<guid>{_esc(e.link)}</guid>"
        cats = "".join(f"<category>{_esc(t)}</category>" for t in e.tags)
        if content:
            text = (
                f"<description>{e.summary}</description>"
                f"<content:encoded><![CDATA[{e.body}]]></content:encoded>"
            )
        else:
            text = f"<description>{_esc(e.body)}</description>"
        out.append(
            f"<item><title>{_esc(e.title)}</title><link>{_esc(e.link)}</link>{guid}"
            f"<pubDate>{format_datetime(e.date, usegmt=True)}</pubDate>"
            f"<dc:creator>{_esc(e.author)}</dc:creator>{cats}\n{text}</item>\n"
        )
    out.append("</channel>\n</rss>\n")
    return "".join(out)


def _atom(info: FeedInfo, entries: list[Entry]) -> str:
    host = f"https://site{info.index:04d}.example.com/"
    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
        f'xml:base="{host}">\n<title>{_esc(info.source)}</title>\n'
        f'<link rel="alternate" href="{host}"/>\n<id>tag:site{info.index:04d}.example.com,2026:feed</id>\n'
        f"<updated>{entries[0].date.isoformat()}</updated>\n"
    ]
    for e in entries:
        cats = "".join(f'<category term="{_esc(t)}"/>' for t in e.tags)
        out.append(
            f"<entry><title>{_esc(e.title)}</title>"
            f'<link rel="alternate" href="{_esc(e.link)}"/>'
            f"<id>tag:site{info.index:04d}.example.com,2026:{e.k}</id>"
            f"<published>{e.date.isoformat()}</published><updated>{e.date.isoformat()}</updated>"
            f"<author><name>{_esc(e.author)}</name></author>{cats}"
            f'<summary type="html">{_esc(e.summary)}</summary>\n'
            f'<content type="html">{_esc(e.body)}</content></entry>\n'
        )
    out.append("</feed>\n")
    return "".join(out)


def _rss1(info: FeedInfo, entries: list[Entry]) -> str:
    host = f"https://site{info.index:04d}.example.com/"
    seq = "".join(f'<rdf:li rdf:resource="{_esc(e.link)}"/>' for e in entries)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n'
        f'<channel rdf:about="{host}"><title>{_esc(info.source)}</title><link>{host}</link>'
        f"<description>Feed number {info.index}</description><items><rdf:Seq>{seq}</rdf:Seq></items>"
        "</channel>\n"
    ]
    for e in entries:
        out.append(
            f'<item rdf:about="{_esc(e.link)}"><title>{_esc(e.title)}</title><link>{_esc(e.link)}</link>'
            f"<dc:date>{e.date.isoformat()}</dc:date><dc:creator>{_esc(e.author)}</dc:creator>"
            + "".join(f"<dc:subject>{_esc(t)}</dc:subject>" for t in e.tags)
            + f"<description>{e.summary}</description>\n"
            f"<content:encoded><![CDATA[{e.body}]]></content:encoded></item>\n"
        )
    out.append("</rdf:RDF>\n")
    return "".join(out)


@dataclass(frozen=True)
class Corpus:
    spec: CorpusSpec
    directory: Path
    total_bytes: int

    def feeds(self) -> list[FeedInfo]:
        return [feed_info(i) for i in range(self.spec.feeds)]

    def path(self, info: FeedInfo) -> Path:
        return self.directory / info.filename


def ensure_corpus(spec: CorpusSpec, root: Path) -> Corpus:
    """Write the corpus under ``root`` unless an identical one is already there."""
    directory = root / spec.name
    stamp = directory / "corpus.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta.get("spec") == asdict(spec):
            return Corpus(spec, directory, int(meta["total_bytes"]))
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    digest = hashlib.sha256()
    for i in range(spec.feeds):
        info = feed_info(i)
        data = render_feed(spec, info)
        (directory / info.filename).write_bytes(data)
        total += len(data)
        digest.update(hashlib.sha256(data).digest())
    meta = {"spec": asdict(spec), "total_bytes": total, "sha256": digest.hexdigest()}
    stamp.write_text(json.dumps(meta, indent=1))
    return Corpus(spec, directory, total)
