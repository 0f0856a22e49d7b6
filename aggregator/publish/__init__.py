"""Publishing: the posts of the index as RSS 2.0, Atom 1.0 and JSON Feed 1.1, plus discovery pages.

One module per concern, in the order a build runs through them::

    specs      which feeds exist, their paths, URLs and titles (FeedSpec)
    items      a post cleaned for publishing (FeedItem)
    formats    each item's RSS, Atom and JSON Feed fragment; a whole feed from its fragments
    skeleton   a feed's channel elements, written by feedgen, with the items spliced in
    renderer   render planned feeds (fragment cache) and write the files whose bytes differ
    parallel   the same, shared with worker processes for large builds
    builder    FeedBuilder: which feeds changed (signatures), removal, sweeping, the index pages
    pages      index.html
    opml       OPML in and out: the one writer of index.opml and of ``export-opml``
    status     the operator's status feed (``feeds/_status/``)

Nothing is imported here, so ``aggregator.publish.opml`` loads without feedgen.
"""
