"""Whatever the YAML, the loader answers with problems (located in the file), never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.config import HooklineConfig
from hookline.connectors import ACTIONS
from hookline.recipes.loader import check_recipes
from hookline.recipes.models import parse_duration

KEYS = ["name", "on", "when", "steps", "id", "uses", "with", "if", "retries", "timeout",
        "on_failure", "defaults", "source", "order_by", "channel", "text", "bogus"]  # fmt: skip
TEXT = st.sampled_from(
    ["r", "slack.post_message", "{{ data.x }}", "{{ steps.a.ts }}", "{% if %}", "2s", "x y",
     "data.x ==", "{{ env.NOPE }}", "a", "${{ x }}", "servicenow.create_incident", ""]
)  # fmt: skip
SCALAR = st.one_of(TEXT, st.integers(-3, 3), st.booleans(), st.none(), st.floats(-1, 5))
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=st.dictionaries(st.sampled_from(KEYS), VALUE, max_size=6))
def test_loader_never_crashes(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = check_recipes([path], config=HooklineConfig(env=["A"]), actions=ACTIONS)
    lines = len(path.read_text().splitlines()) or 1
    for p in result.problems:
        assert 1 <= p.line <= lines + 1, str(p)
        assert str(p).startswith(f"{path}:")
    assert bool(result.recipes) != bool(result.problems)


@given(st.floats(0, 10_000, allow_nan=False), st.sampled_from(["ms", "s", "m", "h"]))
def test_durations(n: float, unit: str) -> None:
    text = f"{n:.3f}{unit}"
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert abs(parse_duration(text) - float(f"{n:.3f}") * factor) < 1e-6
    assert parse_duration("1m30s") == 90 and parse_duration(2) == 2.0
