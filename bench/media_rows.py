"""The media archive's rows: the cold cycle with the archive on, beside it off."""

from __future__ import annotations

from pathlib import Path

from bench import measure
from bench.corpus import Corpus
from bench.driver import Row, Server, aggregator, fetch_summary, free_port, fresh_store, log, write_config
from bench.media import point_images_at


def media_rows(
    corpus: Corpus, work: Path, keep: list[int], baseline: measure.Measurement | None
) -> list[Row]:
    """The cold cycle with the media archive on, the corpus's images on loopback (``bench.media``).

    Then a second cycle: every image must have been requested exactly once over the two. The
    added time per image is against ``baseline`` (the cold cycle with the archive off), or
    against a cold run of this corpus with the archive off when none is given.
    """
    server = Server(corpus, work / "override" / "media")
    keep = [*keep, server.proc.pid]
    rows: list[Row] = []
    n, total = corpus.spec.feeds, corpus.spec.feeds * corpus.spec.entries
    run_dir = work / "run-media"
    try:
        point_images_at(corpus, server.override, server.base)
        if baseline is None:
            fresh_store(run_dir)
            config = write_config(run_dir / "aggregator.yaml", corpus, server, port=free_port())
            log("media: cold fetch, archive off (the baseline)")
            baseline = aggregator(config, "fetch", "--json", keep=keep)
            rows.append(Row("aggregator cold fetch, archive off (images on loopback)", baseline, n,
                            fetch_summary(baseline)["new"]))  # fmt: skip
        fresh_store(run_dir)
        config = write_config(run_dir / "aggregator.yaml", corpus, server, port=free_port(), media=True)
        server.stats()
        log("media: cold fetch, archive on")
        m = aggregator(config, "fetch", "--json", keep=keep)
        s = fetch_summary(m)
        first = server.stats(reset=False)
        log("media: second cycle")
        second = aggregator(config, "fetch", "--json", keep=keep)
        both = server.stats()
        images = first["image_paths"]
        files = sum(1 for path in (run_dir / "media").rglob("*") if path.is_file())
        once = both["image_max"] == 1 and both["image_requests"] == images and both["image_paths"] == images
        wall_ms = (m.wall - baseline.wall) / max(images, 1) * 1000
        cpu_ms = (m.cpu - baseline.cpu) / max(images, 1) * 1000
        rows.append(Row("aggregator cold fetch, media archive on", m, n, s["new"],
                        "each image requested once in 2 cycles", once and s["new"] == total,
                        note=f"{images} images archived ({files} files); +{wall_ms:.2f} ms wall, "
                        f"+{cpu_ms:.2f} ms CPU an image over the cold fetch with it off "
                        f"({baseline.wall:.2f} s, {baseline.cpu:.2f} CPU s); second cycle "
                        f"{second.wall:.2f} s, {both['image_requests'] - first['image_requests']} "
                        "image requests"))  # fmt: skip
    finally:
        server.stop()
    return rows
