"""`hookline check` knows `timer.*` (from the connector registry) and `source: hookline`."""

from __future__ import annotations

from tests.recipes.conftest import Problems

ARM = """
name: arm
on: service.status.changed
source: solveforce
steps:
  - id: arm
    uses: timer.start
    with:
      key: "escalate:{{ data.service_id }}"
      after: 15m
      event_type: outage.escalate
      data: { service_id: "{{ data.service_id }}" }
  - id: disarm
    if: steps.arm.due != ''
    uses: timer.cancel
    with: { key: "{{ steps.arm.key }}" }
  - id: keep
    uses: memory.remember
    with: { key: "k", value: { cancelled: "{{ steps.disarm.cancelled }}" } }
on_failure:
  - id: tell
    uses: slack.post_message
    with: { channel: "#oncall", text: "{{ failure.error }}" }
"""

FIRED = """
name: escalate
on: outage.escalate
source: hookline
steps:
  - id: page
    uses: slack.post_message
    with: { channel: "#oncall", text: "{{ data.service_id }} {{ event.timer.key }}" }
on_failure:
  - id: tell
    uses: slack.post_message
    with: { channel: "#oncall", text: "{{ failure.error }}" }
"""


def test_timer_actions_and_the_hookline_source_pass_check(problems: Problems) -> None:
    assert problems(ARM, "arm.yaml") == []
    assert problems(FIRED, "escalate.yaml") == []


def test_a_misspelt_timer_parameter_or_output_is_reported(problems: Problems) -> None:
    found = problems(ARM.replace("after: 15m", "aftr: 15m"), "arm.yaml")
    text = "\n".join(str(p) for p in found)
    assert "timer.start takes no parameter 'aftr'; did you mean 'after'?" in text
    assert "timer.start needs 'after'" in text
    found = problems(ARM.replace("steps.disarm.cancelled", "steps.disarm.canceled"), "arm.yaml")
    assert "has no output 'canceled'; did you mean 'cancelled'?" in "\n".join(map(str, found))
