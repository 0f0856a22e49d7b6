"""``python -m aggregator``: the same command line as the ``aggregator`` script."""

from aggregator.cli import main

main()
