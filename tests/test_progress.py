"""The progress display of long-running commands: terminal redraws and plain log lines."""

from __future__ import annotations

import io

from django.core.management.base import OutputWrapper

from django_eventsource.management.progress import ProgressDisplay, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_naturally() -> None:
    assert format_duration(42) == "42s"
    assert format_duration(75) == "1m 15s"
    assert format_duration(3725) == "1h 02m"


def test_non_terminal_output_is_throttled_plain_lines_with_rate_and_time_left() -> None:
    out, clock = io.StringIO(), FakeClock()
    display = ProgressDisplay(out, "rebuild", total=1000, terminal=False, interval=5, clock=clock)
    clock.now += 1
    display.update(100)  # before the first interval: nothing yet
    assert out.getvalue() == ""
    clock.now += 4
    display.update(500)  # 5 s in, 100/s, 500 left
    clock.now += 1
    display.update(600)  # throttled
    clock.now += 4
    display.finish(1000)
    lines = out.getvalue().splitlines()
    assert lines == [
        "rebuild: 500/1,000 events (50%) 100/s 5s left",
        "rebuild: 1,000/1,000 events (100%) 100/s in 10s",
    ]
    assert "\r" not in out.getvalue()


def test_terminal_output_redraws_one_line_with_a_bar() -> None:
    raw, clock = io.StringIO(), FakeClock()
    display = ProgressDisplay(OutputWrapper(raw), "catch-up", total=200, terminal=True, clock=clock)
    clock.now += 2
    display.update(100)
    clock.now += 2
    display.finish(200)
    text = raw.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[############------------] 100/200 events (50%) 50/s 2s left" in text
    assert "200/200 events (100%) 50/s in 4s" in text


def test_unknown_total_and_disabled_output() -> None:
    out, clock = io.StringIO(), FakeClock()
    display = ProgressDisplay(out, "outbox", unit="rows", terminal=False, clock=clock)
    clock.now += 3
    display.finish(30)
    assert out.getvalue() == "outbox: 30 rows 10/s in 3s\n"
    quiet = io.StringIO()
    with ProgressDisplay(quiet, "x", terminal=False, enabled=False) as silent:
        silent.update(5)
    assert quiet.getvalue() == ""
