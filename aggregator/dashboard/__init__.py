"""The web dashboard the daemon serves beside the feeds: read-only, every asset its own.

One module per concern::

    health     what /status shows of each source, its order and the summary line: pure, no I/O
    data       the feeds as the pages name and order them, over the index's read-only
               ``DashboardIndex`` (``aggregator.index.dashboard``, where the SQL lives: SQLite's
               or PostgreSQL's, opened by ``aggregator.index.opening.open_dashboard_reader``)
    render     the pages as HTML (Jinja2 templates in ``templates/``, style and scripts in ``static/``)
    auth       ``server.dashboard_auth``: basic auth for /status and the post pages
    app        the routes, mounted by ``aggregator.serve`` before the feeds folder

``render`` also writes the feeds folder's static ``index.html`` (the same page without its
live parts), so ``aggregator.publish`` imports it and nothing else from here.
"""
