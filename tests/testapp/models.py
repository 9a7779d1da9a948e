"""Read models used by the test projections (no migrations: created by syncdb in tests)."""

from django.db import models
