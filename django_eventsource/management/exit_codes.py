"""Exit statuses of the management commands, for monitoring and scripts.

``OK`` (0): the command did its work and found nothing wrong. ``ERROR`` (1): it could
not do its work (a bad option value, an unknown projection, an unreachable database):
Django's ``CommandError``. ``USAGE`` (2): the command line did not parse. ``PROBLEM``
(3): the command ran and reports a problem that needs an operator: a health threshold
crossed (``eventsource_status``), events dead-lettered or a projection paused
(``run_projections --once``), dead letters still failing (``retry_dead_letters``).
"""

from __future__ import annotations

OK = 0
ERROR = 1
USAGE = 2
PROBLEM = 3

__all__ = ["ERROR", "OK", "PROBLEM", "USAGE"]
