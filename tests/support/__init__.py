"""Shared test helpers: real servers on 127.0.0.1, config writers, waiting with deadlines."""
