"""stable_bucket: stable across processes, in range, evenly spread, strict on input."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from uuid import UUID, uuid4

import pytest

from django_eventsource.partitioning import stable_bucket


def test_the_bucket_is_the_same_in_another_process_with_another_hash_seed() -> None:
    keys = [str(uuid4()) for _ in range(50)]
    here = [stable_bucket(key, 7) for key in keys]
    script = (
        "import sys; from django_eventsource.partitioning import stable_bucket; "
        "print(','.join(str(stable_bucket(k, 7)) for k in sys.argv[1:]))"
    )
    env = {"PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, *keys], capture_output=True, text=True, env=env, check=True
    )
    assert [int(b) for b in out.stdout.strip().split(",")] == here


def test_known_keys_keep_their_buckets() -> None:
    # Pinned: a change here would move aggregates to other partitions in a live system.
    key = str(UUID("12345678-1234-5678-1234-567812345678"))
    assert [stable_bucket(key, n) for n in (1, 2, 3, 4, 16)] == [0, 1, 0, 1, 13]


def test_buckets_are_in_range_and_evenly_spread() -> None:
    counts = Counter(stable_bucket(str(uuid4()), 4) for _ in range(8000))
    assert set(counts) == {0, 1, 2, 3}
    # 2,000 expected per bucket; 5 standard deviations (~39 each) is far from flaky.
    assert all(1800 < count < 2200 for count in counts.values()), counts


@pytest.mark.parametrize("buckets", [0, -1, 2.0, True, "4"])
def test_a_bad_bucket_count_is_refused(buckets: object) -> None:
    with pytest.raises(ValueError, match="buckets must be a positive integer"):
        stable_bucket("key", buckets)  # type: ignore[arg-type]


def test_a_key_that_is_not_text_is_refused() -> None:
    with pytest.raises(TypeError, match="str key"):
        stable_bucket(uuid4(), 4)  # type: ignore[arg-type]
