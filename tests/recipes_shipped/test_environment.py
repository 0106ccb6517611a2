"""What the shipped recipes do with the environment at run time: every variable may be unset
(a fresh clone, CI), and each recipe still renders, falling back to its defaults.

Each step is decided by the code a run uses (`hookline.recipes.steps`): a `Chain` walks the
recipe and gives each step its context, `decide` evaluates its ``if`` and renders its ``with``;
an on_failure step runs after a step of the recipe failed, as on-call would see it."""

from __future__ import annotations

from typing import Any

import pytest

from hookline import samples
from hookline.config import load_config
from hookline.recipes import Event, Recipe, RecipeSet, Step, load_recipes
from hookline.recipes.steps import Chain, decide
from tests.recipes_shipped.conftest import REPO

RUN = {"id": "r1", "name": "brave-otter", "url": "http://prefect.local/runs/flow-run/r1"}


@pytest.fixture(scope="module")
def recipes() -> RecipeSet:
    return load_recipes([REPO / "recipes"], config=load_config(REPO / "hookline.yaml"))


def event(event_type: str) -> Event:
    return Event.from_envelope(samples.load(event_type), source="solveforce")


def stopper(rec: Recipe) -> Step:
    """The first step whose failure stops the recipe (no ``continue_on_error``)."""
    return next(s for s in rec.steps if not s.continue_on_error)


def step_params(
    recipes: RecipeSet, recipe: str, step_id: str, event_type: str, environ: dict[str, str]
) -> tuple[bool, dict[str, Any]]:
    """Whether the step ``step_id`` runs in a run of ``recipe`` and, if so, its parameters.

    The steps before it count as skipped (their outputs absent); for an on_failure step, the
    recipe's first step that stops it (`stopper`) failed with "boom" after 3 attempts."""
    rec = recipes.get(recipe)
    assert rec is not None
    chain = Chain(rec, event(event_type), environ=environ, run=RUN)
    section = rec.steps
    if any(s.id == step_id for s in rec.on_failure):
        assert chain.failed(stopper(rec), "boom", attempts=3) is None  # on_failure runs
        section = rec.on_failure
    for step, context in chain.walk(section):
        if step.id == step_id:
            decision = decide(step, context)
            assert decision.outcome != "fail", decision.message
            return decision.outcome == "run", decision.params
    raise AssertionError(f"{recipe}: the run never reaches step {step_id!r}")


SHIPPED = {
    "billing-invoice": "billing.invoice.generated",
    "billing-payment": "billing.payment.processed",
    "billing-usage": "billing.usage.threshold_exceeded",
    "security-alert": "security.alert.created",
    "service-maintenance": "service.maintenance.scheduled",
    "service-outage": "service.status.changed",
    "service-provisioned": "service.provisioned",
    "support-ticket-created": "support.ticket.created",
    "support-ticket-resolved": "support.ticket.resolved",
}


#: The on-call loop's recipes: Slack clicks on the outage alert, and its escalation timer.
ON_CALL = {
    "outage-alert-actions": ("slack", "slack.block_actions"),
    "outage-escalation": ("hookline", "service.outage.unacknowledged"),
}


def test_every_solveforce_event_type_has_a_shipped_recipe(recipes: RecipeSet) -> None:
    assert sorted(r.name for r in recipes.recipes) == sorted([*SHIPPED, *ON_CALL])
    for name, (source, event_type) in ON_CALL.items():
        recipe = recipes.get(name)
        assert recipe is not None and (recipe.source, recipe.on) == ((source,), (event_type,))
    assert sorted(SHIPPED.values()) == [n for n in samples.names() if n != "webhook.test"]


@pytest.mark.parametrize("recipe", sorted(SHIPPED))
@pytest.mark.parametrize("environ", [{}, {"SLACK_ONCALL_CHANNEL": ""}], ids=["unset", "empty"])
def test_every_recipe_pages_oncall_with_the_run_link_even_with_no_channel_set(
    recipes: RecipeSet, recipe: str, environ: dict[str, str]
) -> None:
    runs, params = step_params(recipes, recipe, "notify_oncall", SHIPPED[recipe], environ)
    assert runs
    assert params["channel"] == "#oncall"
    rec = recipes.get(recipe)
    assert rec is not None
    assert RUN["url"] in params["text"] and f"failed at step {stopper(rec).id}" in params["text"]
    assert "boom" in params["text"]


def test_a_set_channel_wins_over_the_default(recipes: RecipeSet) -> None:
    env = {"SLACK_ALERT_CHANNEL": "#noc", "SLACK_ONCALL_CHANNEL": "#pager"}
    assert (
        step_params(recipes, "service-outage", "alert", "service.status.changed", env)[1]["channel"]
        == "#noc"
    )
    assert (
        step_params(recipes, "service-outage", "alert", "service.status.changed", {})[1]["channel"]
        == "#service-alerts"
    )
    assert (
        step_params(recipes, "security-alert", "notify_oncall", "security.alert.created", env)[1][
            "channel"
        ]
        == "#pager"
    )


@pytest.mark.parametrize(
    ("recipe", "event_type"),
    [
        ("billing-invoice", "billing.invoice.generated"),
        ("billing-payment", "billing.payment.processed"),
    ],
)
def test_accounting_is_skipped_without_accounting_api_url(
    recipes: RecipeSet, recipe: str, event_type: str
) -> None:
    assert step_params(recipes, recipe, "accounting", event_type, {}) == (False, {})
    assert step_params(recipes, recipe, "accounting", event_type, {"ACCOUNTING_API_URL": ""}) == (
        False,
        {},
    )
    runs, params = step_params(
        recipes, recipe, "accounting", event_type, {"ACCOUNTING_API_URL": "https://acc.example/v1/"}
    )
    assert runs and params["url"].startswith("https://acc.example/v1/")
    assert "//" not in params["url"].removeprefix("https://")
