"""What the human-work tests of both tiers share (tests/unit/test_human_work.py,
tests/integration/test_human_work_with_label_studio.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def pull_time(seconds: int) -> datetime:
    """The time of a pull, ``seconds`` after a fixed start: pulls of one test sort in the order it makes them."""
    return datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC) + timedelta(seconds=seconds)
