"""Infrastructure repositories: checkpoints, dead letters and the outbox."""
