"""Event buses: in-process and Redis Streams."""
