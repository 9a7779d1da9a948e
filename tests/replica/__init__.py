"""A project whose router sends every read to a lagging copy (``replica``).

``tests/test_replica_reads.py`` checks that the event store still reads from the primary.
"""
