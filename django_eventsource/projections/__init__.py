"""Projections: read models built from events, with checkpoints, retries and dead letters."""
