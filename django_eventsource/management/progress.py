"""Progress display for long-running management commands.

On a terminal, one line redrawn in place: a bar (when the total is known), the count,
the rate and the time left. Elsewhere (a log file, a pipe, CI) a plain line every
``interval`` seconds, and one at the end, so logs stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from django.core.management.base import OutputWrapper

__all__ = ["ProgressDisplay", "format_duration"]


def format_duration(seconds: float) -> str:
    """``75`` → ``"1m 15s"``; ``3725`` → ``"1h 02m"``; under a minute ``"42s"``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _is_terminal(stream: Any) -> bool:
    # Django's OutputWrapper delegates isatty() to the stream it wraps.
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


class ProgressDisplay:
    """Report ``done`` of ``total`` items of work, with the rate and the time left.

    ``stream`` is the command's ``self.stdout`` (or any text stream). ``terminal``
    defaults to whether the stream is a TTY. Call :meth:`update` with the running count
    (not an increment) as often as convenient: output is throttled to ``interval``
    seconds on non-terminals and to ten redraws per second on a terminal. Call
    :meth:`finish` once at the end; it always writes the final line. With
    ``enabled=False`` (``--verbosity 0``) nothing is written.
    """

    BAR_WIDTH = 24

    def __init__(
        self,
        stream: TextIO | Any,
        label: str,
        *,
        total: int | None = None,
        unit: str = "events",
        interval: float = 5.0,
        terminal: bool | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.unit = unit
        self.interval = interval
        self.terminal = _is_terminal(stream) if terminal is None else terminal
        self.enabled = enabled
        self._clock = clock
        self._started = clock()
        self._last_output: float | None = None
        self.done = 0
        self._finished = False

    # -- figures ---------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return max(self._clock() - self._started, 0.0)

    @property
    def rate(self) -> float:
        """Items per second since the start (0 before the first second of work)."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def remaining_seconds(self) -> float | None:
        """Estimated seconds left, or ``None`` when the total or the rate is unknown."""
        if self.total is None or self.done <= 0:
            return None
        rate = self.rate
        if rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def line(self) -> str:
        """The current progress as one line of text (without a newline)."""
        parts = [self.label + ":"]
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            if self.terminal:
                filled = int(fraction * self.BAR_WIDTH)
                parts.append("[" + "#" * filled + "-" * (self.BAR_WIDTH - filled) + "]")
            parts.append(f"{self.done:,}/{self.total:,} {self.unit} ({fraction:.0%})")
        else:
            parts.append(f"{self.done:,} {self.unit}")
        parts.append(f"{self.rate:,.0f}/s")
        remaining = self.remaining_seconds
        if remaining is not None and not self._finished:
            parts.append(f"{format_duration(remaining)} left")
        elif self._finished:
            parts.append(f"in {format_duration(self.elapsed)}")
        return " ".join(parts)

    # -- output ----------------------------------------------------------------------------

    def update(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` items are finished (and, optionally, a new total)."""
        self.done = done
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        now = self._clock()
        throttle = 0.1 if self.terminal else self.interval
        if self._last_output is not None and now - self._last_output < throttle:
            return
        if self._last_output is None and not self.terminal and now - self._started < throttle:
            return  # short work on a non-terminal: only the final line
        self._last_output = now
        self._write(self.line(), final=False)

    def finish(self, done: int | None = None) -> None:
        """Write the final line (once)."""
        if done is not None:
            self.done = done
        if self._finished:
            return
        self._finished = True
        if self.enabled:
            self._write(self.line(), final=True)

    def _write(self, text: str, *, final: bool) -> None:
        if self.terminal:
            # Redraw in place; pad so a shorter line wipes the end of a longer one.
            self._emit("\r" + text.ljust(79), "\n" if final else "")
            flush = getattr(self.stream, "flush", None)
            if callable(flush):
                flush()
        else:
            self._emit(text, "\n")

    def _emit(self, text: str, ending: str) -> None:
        if isinstance(self.stream, OutputWrapper):
            self.stream.write(text, ending=ending)
        else:
            self.stream.write(text + ending)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()
