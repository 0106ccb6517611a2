"""`hookline check` and ``env.NAME``: a variable a template reads without a guard must be set
in the environment checked, because a run fails without it; a guarded one may be unset."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from hookline.cli import main
from hookline.config import HooklineConfig
from hookline.connectors import ACTIONS
from hookline.recipes.loader import check_recipes

CONFIG = HooklineConfig(env=["A", "B"])


def _recipe(channel: str, cond: str | None = None, when: str | None = None) -> str:
    lines = ["name: r", "on: webhook.test"]
    if when is not None:
        lines.append(f"when: {when}")
    lines += ["steps:", "  - id: post"]
    if cond is not None:
        lines.append(f"    if: {cond}")
    lines += ["    uses: slack.post_message", "    with:", f"      channel: {channel!r}"]
    return "\n".join(lines) + "\n"


def _unset_names(tmp_path: Path, text: str, environ: dict[str, str]) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    problems = check_recipes([path], config=CONFIG, actions=ACTIONS, environ=environ).problems
    names = []
    for p in problems:
        assert "is not set, and nothing guards it" in p.message, p
        names.append(p.message.split()[0].removeprefix("env."))
    return names


@pytest.mark.parametrize(
    ("channel", "cond", "unset"),
    [
        ("{{ env.A }}", None, ["A"]),
        ("{{ env['A'] }}", None, ["A"]),
        ("#{{ env.A | trim }}", None, ["A"]),
        ("{{ env.A | default('#x') }}", None, []),
        ("{{ env.A | d('#x') }}", None, []),
        ("{{ env.A | trim | default('#x') }}", None, ["A"]),  # trim fails first
        ("{{ env.A.b | default('#x') }}", None, ["A"]),  # .b of a missing A fails
        ("{{ env.A | default(env.B) }}", None, ["B"]),  # default's argument is evaluated
        ("{{ env.A if env.A is defined else '#x' }}", None, []),
        ("{{ '#x' if env.A is not defined else env.A }}", None, []),
        ("{{ env.A if env.A else '#x' }}", None, ["A"]),  # `if env.A` itself fails
        ("{{ env.A if data.x else '#x' }}", None, ["A"]),  # depends on the event
        ("{{ env.A is defined and env.A != '' }}", None, []),
        ("{{ data.x or env.A }}", None, ["A"]),
        ("{% if env.A is defined %}{{ env.A }}{% else %}{{ env.B }}{% endif %}", None, ["B"]),
        ("{% if env.B is defined %}{% elif env.A is defined %}{{ env.A }}{% endif %}", None, []),
        ("{{ env.A }}", "env.A is defined", []),
        ("{{ env.A }}", "(env.A | default('')) != '' and data.amount > 0", []),
        ("{{ env.A }}", "data.amount > 0", ["A"]),
        ("{{ env.A }}", "data.amount > 0 or env.A is defined", ["A"]),
        ("{{ env.A }}", "false", []),
        ("{{ env.A }}", "env.B is defined or env.A is defined", []),
    ],
)
def test_unset_and_unguarded_is_a_problem(
    tmp_path: Path, channel: str, cond: str | None, unset: list[str]
) -> None:
    assert _unset_names(tmp_path, _recipe(channel, cond), {}) == unset


@pytest.mark.parametrize(
    ("channel", "cond"),
    [
        ("{{ env.A }}", None),
        ("{% if env.A is defined %}{{ env.A }}{% else %}{{ env.B }}{% endif %}", None),
        ("{{ env.B }}", "env.A is defined and env.A != 'skip'"),
    ],
)
def test_a_set_variable_or_a_branch_it_rules_out_is_fine(
    tmp_path: Path, channel: str, cond: str | None
) -> None:
    assert _unset_names(tmp_path, _recipe(channel, cond), {"A": "skip"}) == []


def test_the_problem_names_file_line_step_field_variable_and_the_fixes(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(_recipe("{{ env.B }}", when="env.A == 'x'"), encoding="utf-8")
    problems = check_recipes([path], config=CONFIG, actions=ACTIONS, environ={}).problems
    when, step = (str(p) for p in problems)
    assert when.startswith(
        f"{path}:3:7: when: env.A is not set, and nothing guards it: a run that gets here fails "
        'with "env.A is not set"; set A where Hookline runs (hookline check --env A=VALUE '
        "checks for another environment), or give it a default: env.A | default('...')"
    )
    assert "skip the step" not in when
    assert step.startswith(f"{path}:8:16: step 'post': with.channel: env.B is not set")
    assert step.endswith("or skip the step without it: if: env.B is defined")


def test_without_an_environment_env_is_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(_recipe("{{ env.A }}"), encoding="utf-8")
    assert check_recipes([path], config=CONFIG, actions=ACTIONS).problems == []


def test_check_reads_this_environment_and_env_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hookline.yaml").write_text("env: [SLACK_BILLING_CHANNEL]\n", encoding="utf-8")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "billing.yaml").write_text(
        textwrap.dedent(
            """\
            name: billing
            on: billing.payment.processed
            steps:
              - id: alert
                uses: slack.post_message
                with: {channel: "{{ env.SLACK_BILLING_CHANNEL }}", text: "payment failed"}
            on_failure:
              - uses: slack.post_message
                with: {channel: "#oncall", text: "{{ failure.error }}"}
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLACK_BILLING_CHANNEL", raising=False)
    monkeypatch.delenv("HOOKLINE_CONFIG", raising=False)
    monkeypatch.delenv("HOOKLINE_RECIPES", raising=False)

    r = CliRunner().invoke(main, ["check"])
    assert r.exit_code == 1
    assert (
        "recipes/billing.yaml:6:21: step 'alert': with.channel: env.SLACK_BILLING_CHANNEL is "
        "not set, and nothing guards it" in r.output
    )
    r = CliRunner().invoke(main, ["check", "--env", "SLACK_BILLING_CHANNEL=#billing"])
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("SLACK_BILLING_CHANNEL", "#billing")
    r = CliRunner().invoke(main, ["check"])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output


def test_check_warns_of_a_recipe_without_on_failure_and_still_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "r.yaml").write_text(_recipe("#x"), encoding="utf-8")
    (tmp_path / "off.yaml").write_text(
        _recipe("#x").replace("name: r", "name: off\nenabled: false"), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["check", "r.yaml", "off.yaml"])
    assert r.exit_code == 0, r.output
    [warning] = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(
        "warning: recipe 'r' (r.yaml:1) has no on_failure: when one of its steps fails, the run "
        "ends Failed and nobody is told. Add an on_failure step that tells on-call"
    )
    assert "ok: 2 recipes" in r.stdout
    r = CliRunner().invoke(main, ["check", "--format", "github", "r.yaml"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("::warning::recipe 'r' (r.yaml:1) has no on_failure: ")


def _timer_recipe(after: str, cond: str | None = None) -> str:
    lines = ["name: r", "on: webhook.test", "steps:", "  - id: later"]
    if cond is not None:
        lines.append(f"    if: {cond}")
    lines += [
        "    uses: timer.start",
        "    with:",
        "      key: k",
        "      event_type: later.due",
        f"      after: {after!r}",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("after", "cond", "environ", "rendered"),
    [
        ("{{ env.A | default('15m', true) }}", None, {"A": "15 minutes"}, "15 minutes"),
        ("{{ env.A }}m", None, {"A": "ten"}, "tenm"),
        ("{{ env.A | default('15m', true) }}", None, {"A": "90s"}, None),
        ("{{ env.A | default('15m', true) }}", None, {}, None),  # the default is valid
        ("{{ env.A }}m", None, {"A": "10"}, None),  # text around the value is fine
        ("{{ env.A }}", "env.B is defined", {"A": "soon"}, None),  # the step never runs here
        ("{{ data.delay | default(env.A) }}", None, {"A": "soon"}, None),  # reads the event
    ],
)
def test_check_renders_a_parameter_that_reads_only_env_and_checks_its_value(
    tmp_path: Path, after: str, cond: str | None, environ: dict[str, str], rendered: str | None
) -> None:
    """``after: "{{ env.ESCALATE_AFTER | default('15m', true) }}"`` is the same for every event:
    a variable set to what is no duration fails every run at that step, so check says so."""
    path = tmp_path / "r.yaml"
    path.write_text(_timer_recipe(after, cond), encoding="utf-8")
    problems = check_recipes([path], config=CONFIG, actions=ACTIONS, environ=environ).problems
    if rendered is None:
        assert problems == []
        return
    assert [p.message for p in problems] == [
        f"renders {rendered!r} in this environment (env.A), which "
        f"is not a valid duration: bad duration {rendered!r}; write seconds (30, 1.5) or a "
        "duration such as '500ms', '2s', '1m30s', '1h'"
    ]


def test_check_command_names_the_variable_a_shipped_recipe_renders_into_a_bad_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped service-outage recipe with ESCALATE_AFTER=15 minutes (a space, a word)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    for name in ("HOOKLINE_CONFIG", "HOOKLINE_RECIPES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ESCALATE_AFTER", "15 minutes")
    r = CliRunner().invoke(main, ["check"])
    assert r.exit_code == 1, r.output
    assert (
        "recipes/service-outage.yaml:104:14: step 'escalate_later': with.after: renders "
        "'15 minutes' in this environment (env.ESCALATE_AFTER), which is not a valid duration"
    ) in r.output
    r = CliRunner().invoke(main, ["check", "--env", "ESCALATE_AFTER=20m"])
    assert r.exit_code == 0, r.output
