"""A project that keeps the event store, the read models and Django's own tables apart.

``tests.multidb.settings`` configures three aliases and ``tests.multidb.router`` places the
models on them; ``tests/test_multidb.py`` migrates such a project and runs it end to end.
"""
