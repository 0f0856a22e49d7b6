"""Build the published feeds from the index: what changed, what to render, what to remove.

Feeds are built from the index alone, never from the post files::

    feed keys to build | newest refs per key (no bodies) | signature unchanged? skip
      | render the changed feeds, here or in worker processes (renderer, parallel)
      | record them in the index | remove feeds no key wants | index.html, index.opml

Output is byte-stable: nothing depends on the build time (``lastBuildDate`` and
``updated`` come from the newest item), so an unchanged feed keeps its ETag.
A feed whose items and settings have not changed since it was last written is
not rendered at all (its signature, kept in the index, says so), and a rendered
feed is only written when its bytes differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aggregator import __version__
from aggregator.categories import display_path, first_spellings, spelling_in
from aggregator.config import Config
from aggregator.config_categories import category_paths
from aggregator.errors import BuildError
from aggregator.files import write_atomic
from aggregator.index.feeds import FeedRef
from aggregator.keys import ALL_KEY, CATEGORY_PREFIX, category_slugs, split_key
from aggregator.publish.items import ItemOptions
from aggregator.publish.opml import index_opml
from aggregator.publish.pages import render_index_html
from aggregator.publish.parallel import (
    PARALLEL_MIN_FEEDS,
    RUNS_PER_PROCESS,
    WORKER_CACHE_BYTES,
    Dispatch,
    WorkerSetup,
    spare_cores,
)
from aggregator.publish.renderer import FRAGMENT_CACHE_BYTES, Built, FragmentCache, Job, Renderer, differs
from aggregator.publish.specs import FEED_KINDS, FORMAT_FILES, FeedSpec, spec_for
from aggregator.store import PostStore

# Extra refs read per feed so that entries repeated across sources can be dropped.
_DUPLICATE_MARGIN = 10


@dataclass
class BuildReport:
    rendered: list[str] = field(default_factory=list)  # feed keys with at least one file written
    skipped: int = 0
    removed: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)  # directories of stale feed files no key wants
    written_urls: list[str] = field(default_factory=list)  # public URLs of the feed files written

    @property
    def changed(self) -> list[str]:
        return self.rendered + self.removed + self.swept


def _settings_signature(config: Config) -> str:
    """What every feed's bytes depend on besides its own title, description and items."""
    build = config.build.model_dump(mode="json", exclude={"categories"})
    return json.dumps([__version__, config.site.model_dump(mode="json"), build], ensure_ascii=False)


def _signature(settings: str, spec: FeedSpec, refs: Sequence[FeedRef]) -> str:
    material = json.dumps(
        [settings, spec.title, spec.description, [(r.source, r.entry_id, r.content_hash) for r in refs]],
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _unique(refs: Sequence[FeedRef], limit: int) -> list[FeedRef]:
    """One item per entry id: the same entry from two sources is one item (unique guids)."""
    seen: set[str] = set()
    kept = []
    for ref in refs:
        if ref.entry_id not in seen:
            seen.add(ref.entry_id)
            kept.append(ref)
    return kept[:limit]


class FeedBuilder:
    """Builds feeds from the index and publishes them atomically.

    A build plans in this process (each feed's newest refs and signature, so an
    unchanged feed costs one query and no rendering), then renders the feeds
    that changed. Past ``parallel_min_feeds`` of them (a full build, a settings
    change) worker processes render a share each: see ``_plan_and_render``.
    """

    def __init__(
        self,
        config: Config,
        store: PostStore,
        *,
        cache_bytes: int = FRAGMENT_CACHE_BYTES,
        processes: int | None = None,
        parallel_min_feeds: int = PARALLEL_MIN_FEEDS,
    ) -> None:
        self.config = config
        self.store = store
        self.cache = FragmentCache(cache_bytes)
        # Worker processes besides this one: one per further core, a few at most.
        self.processes = spare_cores() if processes is None else processes
        self.parallel_min_feeds = parallel_min_feeds
        self._source_categories: dict[str, tuple[str, ...]] = {}
        self._specs: dict[str, FeedSpec] = {}
        self._specs_config: Config | None = None
        # How each category level is titled: as first spelt in the config, else by the
        # earliest post of its feed (asked once per build: posts come and go).
        self._config_names: dict[tuple[str, ...], str] = {}
        self._config_keys: set[str] = set()
        self._post_names: dict[tuple[str, ...], str | None] = {}
        self._titles_config: Config | None = None  # the config the published titles were checked against

    @property
    def root(self) -> Path:
        return self.config.feeds_dir

    def build(self, keys: Iterable[str] | None = None) -> BuildReport:
        """Rebuild ``keys`` (all feeds when None) and the index pages when anything changed."""
        report = BuildReport()
        self.cache.reset_if_changed(ItemOptions.of(self.config))
        settings = _settings_signature(self.config)
        self._post_names = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            titles = {key: title for key, title, *_ in self.store.index.published_feeds()}
            published = set(titles)
            if keys is None:
                wanted = set(self.store.index.feed_keys())
                gone = published - wanted
            else:
                asked = set(keys) | self._retitled(published - set(keys), titles)
                wanted = self.store.index.feed_keys_present(asked)
                gone = (asked - wanted) & published
            self._source_categories = self._categories_of_sources(wanted)
            built = self._plan_and_render(sorted(wanted, key=self._locality), settings, report)
            for done in built:
                if done.written:
                    report.rendered.append(done.key)
                    report.written_urls += done.urls
                else:
                    report.skipped += 1
            # Only now that every file is on disk: a failed write leaves its feed to be built again.
            self.store.index.record_feeds((d.key, d.signature, d.title, d.count, d.newest) for d in built)
            for key in sorted(gone):
                self._remove(self._spec(key))
                report.removed.append(key)
            if keys is None:
                report.swept += self._sweep({self._spec(key).relative_dir for key in wanted})
            if report.changed or keys is None or not (self.root / "index.html").exists():
                self._write_indexes()
        except OSError as error:
            raise BuildError(f"cannot write feeds under {self.root}: {error}") from error
        return report

    def _spec(self, key: str) -> FeedSpec:
        """spec_for, remembered while the config stays the same (the daemon swaps it on reload)
        and, for a category, while its levels keep their names."""
        if self._specs_config is not self.config:
            self._specs, self._specs_config = {}, self.config
            self._config_names = first_spellings(category_paths(self.config))
            # Categories whose every level the config names (their titles change only with it).
            self._config_keys = {CATEGORY_PREFIX + "\x1f".join(slugs) for slugs in self._config_names}
        names = display_path(split_key(key)[1], self._level_name) if key.startswith(CATEGORY_PREFIX) else None
        spec = self._specs.get(key)
        if spec is None or (names is not None and spec.parts != names):
            spec = self._specs[key] = spec_for(key, self.config, names)
        return spec

    def _retitled(self, others: set[str], titles: dict[str, str]) -> set[str]:
        """Published feeds not asked for whose title changed: the config's (checked once per
        config: a reload may reorder spellings or retitle the site), or a category's named by
        a post (its first spelling's post is gone, or an earlier one came, which renames the
        feeds below it too though their posts did not change)."""
        if self._titles_config is not self.config:
            self._titles_config = self.config
        else:
            self._spec(ALL_KEY)  # the config's names, for the set below
            others = {k for k in others if k.startswith(CATEGORY_PREFIX) and k not in self._config_keys}
        return {key for key in others if self._spec(key).title != titles[key]}

    def _level_name(self, slugs: tuple[str, ...]) -> str | None:
        """How a category level is titled: its first spelling in the config, else in its earliest post."""
        name = self._config_names.get(slugs)
        if name is None:
            if slugs not in self._post_names:
                paths = self.store.index.first_post_categories(CATEGORY_PREFIX + "\x1f".join(slugs))
                spelt = spelling_in(slugs, paths)
                self._post_names[slugs] = spelt[-1] if spelt else None
            name = self._post_names[slugs]
        return name

    def _categories_of_sources(self, keys: set[str]) -> dict[str, tuple[str, ...]]:
        """Each source's category path: from the config, else from its newest post."""
        found = {source.name: source.categories for source in self.config.sources}
        for key in keys:
            kind, parts = split_key(key)
            if kind == "source" and parts[0] not in found and (refs := self.store.index.feed_refs(key, 1)):
                posts = self.store.index.indexed_posts([(refs[0].source, refs[0].entry_id)])
                found[parts[0]] = next(iter(posts.values())).categories if posts else ()
        return found

    def _locality(self, key: str) -> tuple[tuple[int, str], ...]:
        """Children before parents, each source beside its categories: rendered items are reused soon."""
        kind, parts = split_key(key)
        if kind == "category":
            return (*((0, part) for part in parts), (2, ""))
        if kind == "source":
            categories = category_slugs(self._source_categories.get(parts[0], ()))
            return (*((0, part) for part in categories), (1, parts[0]))
        return ((3, key),)

    def _plan(self, spec: FeedSpec, settings: str, root: Path) -> Job | None:
        """The feed's newest items and signature; None when its files already hold exactly those."""
        refs = self._newest_unique(spec.key, self.config.build.max_items)
        signature = _signature(settings, spec, refs)
        if self.store.index.feed_signature(spec.key) == signature and all(
            (root / spec.relative_dir / FORMAT_FILES[fmt]).exists() for fmt in self.config.build.formats
        ):
            return None
        return Job(spec, tuple(refs), signature)

    def _newest_unique(self, key: str, limit: int) -> list[FeedRef]:
        """The newest ``limit`` distinct entries; the window grows while duplicates fill it."""
        window = limit + _DUPLICATE_MARGIN
        while True:
            refs = self.store.index.feed_refs(key, window)
            unique = _unique(refs, limit)
            if len(unique) >= limit or len(refs) < window:
                return unique
            window *= 4

    def _plan_and_render(self, keys: Sequence[str], settings: str, report: BuildReport) -> list[Built]:
        """Plan each feed; render the changed ones here, or with worker processes once there are many.

        Workers start as soon as the plan holds ``parallel_min_feeds`` changed
        feeds and render runs of them while the plan goes on, so their start-up
        overlaps the planning; this process joins in once the plan is done.
        """
        here = Renderer(self.config, self.store.index.indexed_posts, self.cache)
        jobs: list[Job] = []
        dispatch: Dispatch | None = None
        try:
            for key in keys:
                job = self._plan(self._spec(key), settings, here.root)
                if job is None:
                    report.skipped += 1
                    continue
                jobs.append(job)
                if dispatch is not None:
                    dispatch.add(job)
                elif self.processes > 0 and len(jobs) >= max(self.parallel_min_feeds, 1):
                    runs = (self.processes + 1) * RUNS_PER_PROCESS
                    run_items = len(keys) * self.config.build.max_items / runs
                    # Each process keeps a small cache of its own: runs are local, and the tree's
                    # memory stays about what one process with the full cache took.
                    here = Renderer(
                        self.config, self.store.index.indexed_posts, FragmentCache(WORKER_CACHE_BYTES)
                    )
                    dispatch = Dispatch(here, self._worker_setup(), self.processes, run_items)
                    for earlier in jobs:
                        dispatch.add(earlier)
            return dispatch.finish() if dispatch is not None else here.render(jobs)
        finally:
            if dispatch is not None:
                dispatch.close()

    def _worker_setup(self) -> WorkerSetup:
        # The workers need the site and build settings, not the (possibly thousands of) sources.
        config = self.config.model_copy(update={"sources": ()})
        return WorkerSetup(config, self.store.index.reader_spec(), WORKER_CACHE_BYTES, os.getpid())

    def _remove(self, spec: FeedSpec) -> None:
        self._remove_dir(self.root / spec.relative_dir)
        self.store.index.forget_feed(spec.key)

    def _remove_dir(self, directory: Path) -> None:
        for name in FORMAT_FILES.values():
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        # Remove now-empty directories up to the kind's folder, never beyond.
        with contextlib.suppress(OSError):
            while directory != self.root and not any(directory.iterdir()):
                directory.rmdir()
                directory = directory.parent

    def _sweep(self, wanted: set[PurePosixPath]) -> list[str]:
        """Feed files no key wants (left by a rebuilt index or a renamed category); their paths."""
        stale = []
        for kind in FEED_KINDS:
            for dirpath, _dirs, filenames in os.walk(self.root / kind):
                relative = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
                if relative not in wanted and set(filenames) & set(FORMAT_FILES.values()):
                    stale.append(str(relative))
        for path in stale:
            self._remove_dir(self.root / path)
        return stale

    def _write_indexes(self) -> None:
        feeds = [(self._spec(key), count, newest)
                 for key, _title, count, newest in self.store.index.published_feeds()]  # fmt: skip
        feeds.sort(key=lambda f: (FEED_KINDS.index(f[0].kind), f[0].parts))
        index_html = render_index_html(self.config, feeds)
        opml = index_opml(self.config, feeds)
        for name, data in (("index.html", index_html), ("index.opml", opml)):
            path = self.root / name
            if differs(path, data):
                write_atomic(path, data)
