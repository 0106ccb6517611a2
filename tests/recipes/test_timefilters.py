"""The ``elapsed`` filter, through real recipe templates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hookline.recipes.templating import ENV
from hookline.recipes.templating.timefilters import elapsed, human_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (45, "45s"),
        (60, "1m"),
        (900, "15m"),
        (930, "15m 30s"),
        (3600, "1h"),
        (3725, "1h 2m"),
        (90061, "1d 1h"),
        (-5, "0s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_elapsed_reads_every_time_events_carry() -> None:
    start = "2026-12-02T10:00:00Z"
    assert elapsed(start, "2026-12-02T10:15:00+00:00") == "15m"
    assert elapsed("2026-12-02T10:00:00", "2026-12-02T11:02:05Z") == "1h 2m"  # naive is UTC
    epoch = datetime(2026, 12, 2, 10, tzinfo=UTC).timestamp()
    assert elapsed(start, f"{epoch + 90:.6f}") == "1m 30s"  # Slack's action_ts text
    assert elapsed(epoch, datetime(2026, 12, 2, 10, 0, 45, tzinfo=UTC)) == "45s"


def test_elapsed_in_a_template_and_its_error() -> None:
    template = ENV.from_string("open for {{ data.opened_at | elapsed(timestamp) }}")
    context = {"data": {"opened_at": "2026-12-02T10:00:00Z"}, "timestamp": "2026-12-02T10:15Z"}
    assert template.render(context) == "open for 15m"
    with pytest.raises(ValueError, match="elapsed: start 'soon' is not a time"):
        template.render({"data": {"opened_at": "soon"}, "timestamp": "2026-12-02T10:15Z"})
