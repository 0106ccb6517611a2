"""The four commands, run the way a user runs them (click's runner, real files)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hookline.cli import main
from hookline.config import get_settings
from hookline.recipes.schema import dumps, recipe_schema, recipe_test_schema

REPO = Path(__file__).resolve().parents[2]

GOOD = """
name: outage
on: service.status.changed
when: data.current_status == 'outage'
steps:
  - id: alert
    uses: slack.post_message
    with:
      channel: "{{ env.SLACK_ALERT_CHANNEL }}"
      text: "{{ data.service_name }} down; token {{ env.API_TOKEN }}"
  - id: incident
    if: data.impact == 'high'
    uses: servicenow.create_incident
    with:
      short_description: "{{ data.service_name }}"
      priority: "{{ 1 if data.impact == 'high' else 2 }}"
  - id: thread
    uses: slack.post_message
    with:
      channel: "{{ steps.alert.channel }}"
      thread_ts: "{{ steps.alert.ts }}"
      text: "see {{ steps.alert.permalink }}"
on_failure:
  - id: tell_oncall
    uses: slack.post_message
    with:
      channel: "#oncall"
      text: "{{ recipe.name }} failed at {{ failure.step }}: {{ failure.error }}"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "hookline.yaml").write_text(
        "env: [SLACK_ALERT_CHANNEL, API_TOKEN]\n", encoding="utf-8"
    )
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "outage.yaml").write_text(textwrap.dedent(GOOD), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    # the environment the recipe needs (the developer's shell must not leak into the tests)
    monkeypatch.setenv("SLACK_ALERT_CHANNEL", "#from-env")
    monkeypatch.setenv("API_TOKEN", "env-token-value")
    get_settings.cache_clear()
    return tmp_path


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_check_ok(project: Path) -> None:
    r = run("check")
    assert r.exit_code == 0, r.output
    assert "ok: 1 recipe (outage)" in r.output


def test_check_lists_every_error_and_exits_1(project: Path) -> None:
    bad = project / "recipes" / "bad.yaml"
    bad.write_text(
        "name: bad\non: x\nsteps:\n  - id: a\n    uses: slack.post_mesage\n"
        "  - id: b\n    uses: slack.post_message\n    with: {channel: '{{ steps.c.ts }}'}\n",
        encoding="utf-8",
    )
    r = run("check")
    assert r.exit_code == 1
    assert "bad.yaml:5:11: step 'a': uses: unknown action 'slack.post_mesage'" in r.output
    assert "bad.yaml:8:21: step 'b': with.channel: steps.c: there is no step 'c'" in r.output
    assert "2 problems in 1 file" in r.output


def test_check_formats_for_ci(project: Path) -> None:
    bad = project / "recipes" / "bad.yaml"
    bad.write_text("name: bad\non: x\nsteps:\n  - id: a\n    uses: slack.post_mesage\n")
    r = run("check", "--format", "github")
    assert r.exit_code == 1
    assert (
        "::error file=recipes/bad.yaml,line=5,col=11::step 'a', uses: unknown action "
        "'slack.post_mesage'; did you mean 'slack.post_message'?"
    ) in r.output
    r = run("check", "--format", "json")
    assert r.exit_code == 1
    doc = json.loads(r.output[: r.output.rindex("}") + 1])
    (p,) = doc["problems"]
    assert (p["path"], p["line"], p["column"], p["step"]) == ("recipes/bad.yaml", 5, 11, "a")
    assert doc["ok"] is False and doc["recipes"] == ["outage"]


def test_check_explicit_paths(project: Path) -> None:
    assert run("check", "recipes/outage.yaml").exit_code == 0
    r = run("check", "nowhere")
    assert r.exit_code == 1 and "nowhere:0:0: no such file or folder" in r.output


def test_try_shows_match_steps_params_and_masks_secrets(project: Path) -> None:
    event = project / "e.json"
    body = {
        "event_type": "service.status.changed",
        "event_id": "evt_1",
        "data": {"service_name": "Voice", "current_status": "outage", "impact": "low"},
    }
    event.write_text(json.dumps(body), encoding="utf-8")
    r = run(
        "try", "--event", str(event), "--env", "SLACK_ALERT_CHANNEL=#noc",
        "--env", "API_TOKEN=s3cr3t-value",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = r.output
    assert "[MATCH] outage" in out
    assert "when \"data.current_status == 'outage'\" is True" in out
    assert 'channel: "#noc"' in out
    assert "s3cr3t-value" not in out and "token ••••••" in out
    assert (
        "2. incident (servicenow.create_incident): skipped "
        "(if \"data.impact == 'high'\" is false)" in out
    )
    assert 'thread_ts: "<steps.alert.ts>"' in out
    assert "1 of 1 recipe match" in out


def test_try_json_and_no_match(project: Path) -> None:
    r = run("try", "--sample", "service.status.changed", "--json", "outage")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    (rec,) = doc["recipes"]
    assert rec["matched"] is False and "but when" in rec["reason"]
    assert doc["event"]["event_id"] == "evt_1234567890"


def test_try_recipe_file_and_unknown_name(project: Path) -> None:
    r = run("try", "--sample", "billing.invoice.generated", "recipes/outage.yaml")
    assert r.exit_code == 0 and "[no match] outage" in r.output
    r = run("try", "--sample", "billing.invoice.generated", "outgae")
    assert r.exit_code == 1 and "did you mean 'outage'?" in r.output


def test_try_reports_a_when_error_with_the_event_id(project: Path) -> None:
    r = run("try", "--event", "-", input='{"event_type": "service.status.changed", "id": "e9"}')
    assert r.exit_code == 1
    assert "[ERROR] outage" in r.output and "'e9'" in r.output


def test_test_recipes_pass_and_fail(project: Path) -> None:
    tests = project / "recipes" / "tests"
    tests.mkdir()
    (tests / "outage.yaml").write_text(
        textwrap.dedent(
            """
            recipe: outage
            env: {SLACK_ALERT_CHANNEL: "#noc", API_TOKEN: t0k3n-value}
            outputs: {alert: {channel: C1, ts: "1.2"}}
            cases:
              - name: high impact opens an incident
                sample: service.status.changed
                set: {data: {current_status: outage, impact: high}}
                expect:
                  matched: true
                  steps:
                    alert: {with: {channel: "#noc"}}
                    incident: {with: {priority: 1}}
                    thread: {with: {thread_ts: "1.2"}}
              - name: wrong on purpose
                sample: service.status.changed
                expect:
                  matched: true
            """
        ),
        encoding="utf-8",
    )
    r = run("test-recipes")
    assert r.exit_code == 1
    assert "PASS recipes/tests/outage.yaml:6 high impact opens an incident" in r.output
    assert "FAIL recipes/tests/outage.yaml:15 wrong on purpose" in r.output
    assert "expected a match, got no match" in r.output
    assert "1 passed, 1 failed" in r.output


def test_test_recipes_reports_a_broken_test_file_with_its_line(project: Path) -> None:
    tests = project / "recipes" / "tests"
    tests.mkdir()
    (tests / "t.yaml").write_text(
        "recipe: outage\ncases:\n  - name: x\n    sample: service.status.changed\n"
        "    expect: {matchd: true}\n",
        encoding="utf-8",
    )
    r = run("test-recipes")
    assert r.exit_code == 1
    assert "t.yaml:5:14: cases.0.expect.matchd: unknown key 'matchd'" in r.output


def test_repo_recipes_check_and_their_tests_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    r = run("check")
    assert r.exit_code == 0, r.output
    r = run("test-recipes")
    assert r.exit_code == 0, r.output
    assert " 0 failed" in r.output


def test_committed_schemas_are_in_sync() -> None:
    committed = (REPO / "recipes" / "recipe.schema.json").read_text(encoding="utf-8")
    assert committed == dumps(recipe_schema()), "run: hookline schema -o recipes/recipe.schema.json"
    committed = (REPO / "recipes" / "tests" / "recipe-test.schema.json").read_text("utf-8")
    assert committed == dumps(recipe_test_schema()), (
        "run: hookline schema --tests -o recipes/tests/recipe-test.schema.json"
    )


def test_schema_accepts_the_example_and_flags_mistakes() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = recipe_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    doc = yaml.safe_load((REPO / "recipes" / "service-outage.yaml").read_text("utf-8"))
    doc["on"] = doc.pop(True)  # PyYAML's YAML 1.1 reads `on` as True; editors use YAML 1.2
    assert list(validator.iter_errors(doc)) == []
    doc["steps"][0]["with"]["chanel"] = "#x"
    doc["stepz"] = []
    messages = [e.message for e in validator.iter_errors(doc)]
    assert any("stepz" in m for m in messages)
    assert any("chanel" in m for m in messages)


def test_schema_command_check(project: Path) -> None:
    out = project / "s.json"
    assert run("schema", "-o", str(out)).exit_code == 0
    assert run("schema", "-o", str(out), "--check").exit_code == 0
    out.write_text("{}", encoding="utf-8")
    r = run("schema", "-o", str(out), "--check")
    assert r.exit_code == 1 and "out of date" in r.output


def test_test_recipes_sees_an_unset_variable_fail_as_a_run_would(project: Path) -> None:
    """The case env is the whole environment: a variable it leaves out is unset, and a step
    reading it without a guard is an error (the run's text), the next steps not reached."""
    tests = project / "recipes" / "tests"
    tests.mkdir()
    (tests / "outage.yaml").write_text(
        textwrap.dedent(
            """
            recipe: outage
            env: {API_TOKEN: t0k3n-value}
            cases:
              - name: without the channel the alert fails and on-call hears of it
                sample: service.status.changed
                set: {data: {current_status: outage, impact: high}}
                expect:
                  steps:
                    alert: {error: "with.channel: env.SLACK_ALERT_CHANNEL is not set"}
                    incident: not reached
                  on_failure:
                    tell_oncall: {with: {channel: "#oncall"}}
              - name: with it, it runs
                sample: service.status.changed
                set: {data: {current_status: outage, impact: high}}
                env: {SLACK_ALERT_CHANNEL: "#noc", API_TOKEN: t0k3n-value}
                expect:
                  steps: {alert: run, incident: run}
              - name: expecting it to run without the channel fails
                sample: service.status.changed
                set: {data: {current_status: outage}}
                expect:
                  steps: {alert: run}
            """
        ),
        encoding="utf-8",
    )
    r = run("test-recipes")
    assert r.exit_code == 1
    assert "2 passed, 1 failed" in r.output
    assert (
        "step 'alert': expected run, got error: recipe 'outage' step 'alert' "
        "(recipes/outage.yaml:6): with.channel: env.SLACK_ALERT_CHANNEL is not set"
    ) in r.output


def test_try_of_an_unset_variable_is_the_runs_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_ALERT_CHANNEL")
    body = '{"event_type": "service.status.changed", "event_id": "e1", "data": '
    body += '{"service_name": "Voice", "current_status": "outage", "impact": "high"}}'
    r = run("try", "--event", "-", input=body)
    assert r.exit_code == 1, r.output
    assert "1. alert (slack.post_message): ERROR" in r.output
    assert "with.channel: env.SLACK_ALERT_CHANNEL is not set" in r.output
    assert "2. incident (servicenow.create_incident): not reached (step 'alert' failed)" in r.output
    assert "on_failure (runs because step 'alert' failed):" in r.output
    r = run("try", "--event", "-", "--env", "SLACK_ALERT_CHANNEL=#noc", input=body)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "command", [("try", "--sample", "service.status.changed"), ("test-recipes",)], ids=str
)
def test_commands_that_run_recipes_refuse_a_set_with_a_problem(
    project: Path, command: tuple[str, ...]
) -> None:
    (project / "recipes" / "bad.yaml").write_text(
        "name: bad\non: x\nsteps:\n  - id: a\n    uses: slack.post_mesage\n", encoding="utf-8"
    )
    r = run(*command)
    assert r.exit_code == 1
    assert "bad.yaml:5:11: step 'a': uses: unknown action 'slack.post_mesage'" in r.stderr
    assert r.stderr.rstrip().endswith("error: fix the recipes first (hookline check)")
    assert "PASS" not in r.stdout and "dry run" not in r.stdout


@pytest.mark.parametrize(
    "command", [("try", "--sample", "service.status.changed"), ("test-recipes",)], ids=str
)
def test_commands_that_run_recipes_name_a_broken_hookline_yaml(
    project: Path, command: tuple[str, ...]
) -> None:
    (project / "hookline.yaml").write_text("envv: [API_TOKEN]\n", encoding="utf-8")
    r = run(*command)
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and "hookline.yaml" in r.stderr and "envv" in r.stderr
