"""Every command the docs show is run by a test (the registry below says which), the offline
ones run here, links resolve, and the tables agree with the code and hookline.yaml."""

from __future__ import annotations

import re
import shlex

import pytest
from click.testing import CliRunner

from hookline.config import load_config
from tests.docs.conftest import DOCS, REPO, console_commands

REPLAY = "test_operations.py::test_failed_event_oncall_page_and_replay"
METRICS = "test_operations.py::test_metrics_are_the_documented_ones"

#: command as written in the docs -> the test that runs it
RUN_BY: dict[str, str] = {
    "make up": "test_readme.py::test_quick_start_is_make_up_and_make_test (make -n)",
    "make test": "test_readme.py::test_quick_start_is_make_up_and_make_test (make -n)",
    ".venv/bin/hookline send service.status.changed": "test_readme.py::test_walkthrough",
    ".venv/bin/hookline events": "test_readme.py::test_walkthrough",
    'secret="${SOLVEFORCE_WEBHOOK_SECRET:-$(cat .hookline/dev-secret)}"': (
        "test_readme.py::test_walkthrough"
    ),
    "body='{": "test_readme.py::test_walkthrough",
    'sig="sha256=$(printf': "test_readme.py::test_walkthrough",
    "curl -sS http://127.0.0.1:8000/webhooks/solveforce": "test_readme.py::test_walkthrough",
    ".venv/bin/hookline up": "test_readme.py (the `up` fixture)",
    "hookline serve --host 0.0.0.0 --port 8000 --workers 4": "test_operations.py (stack)",
    "hookline dispatch": "test_operations.py (stack)",
    "hookline worker --limit 8": "test_operations.py (stack)",
    "export HOOKLINE_DATABASE_URL=": "test_operations.py (stack)",
    "export PREFECT_API_URL=": "test_operations.py (stack)",
    "PREFECT_API_DATABASE_CONNECTION_URL=": "test_operations.py (stack)",
    "hookline check": "test_docs_consistency.py::test_offline_commands",
    "hookline test-recipes": "test_docs_consistency.py::test_offline_commands",
    "hookline try --sample service.status.changed": (
        "test_docs_consistency.py::test_offline_commands"
    ),
    "curl -s http://127.0.0.1:8000/healthz": "test_operations.py::test_health_checks",
    "curl -s http://127.0.0.1:8000/readyz": "test_operations.py::test_health_checks",
    "curl -s http://127.0.0.1:8000/metrics": METRICS,
    "hookline events --status failed": REPLAY,
    "hookline events show evt_1234567890": REPLAY,
    "hookline replay evt_1234567890": REPLAY,
    "hookline replay --all-failed": REPLAY,
    "hookline events --since 1h": REPLAY,
    "printf '%s' \"$body\" | openssl dgst": (
        "test_operations.py::test_signature_by_hand_matches_the_receiver"
    ),
    "hookline send service.status.changed --url": "test_operations.py::test_send_to_a_receiver_url",
}


def _covered(command: str) -> str | None:
    return next((k for k in RUN_BY if command == k or command.startswith(k)), None)


def test_every_command_in_the_docs_is_run_by_a_test() -> None:
    shown = [(doc, n, c) for doc in DOCS for n, c in console_commands(doc)]
    missing = [f"{doc}:{n}: {c}" for doc, n, c in shown if _covered(c) is None]
    assert not missing, "commands no test runs (add a test and a RUN_BY entry):\n" + "\n".join(
        missing
    )
    used = {_covered(c) for _, _, c in shown}
    assert not set(RUN_BY) - used, f"RUN_BY entries no doc shows: {set(RUN_BY) - used}"


@pytest.mark.parametrize(
    "command",
    ["hookline check", "hookline test-recipes", "hookline try --sample service.status.changed"],
)
def test_offline_commands(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hookline.cli import main

    assert any(c == command for doc in DOCS for _, c in console_commands(doc))
    monkeypatch.chdir(REPO)
    for name in ("HOOKLINE_RECIPES", "HOOKLINE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    r = CliRunner().invoke(main, shlex.split(command)[1:], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    if command == "hookline check":
        assert r.output.startswith("ok: 11 recipes (billing-invoice, billing-payment,")
    if command == "hookline test-recipes":
        assert re.search(r"^\d+ passed, 0 failed$", r.output, flags=re.M), r.output
    if command.startswith("hookline try"):
        assert "[MATCH] service-outage" in r.output


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    base = (REPO / doc).parent
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        target = (base / link).resolve()
        assert target.exists(), f"{doc}: broken link {link}"


def test_operations_anchors_resolve() -> None:
    text = (REPO / "docs/operations.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, flags=re.M)
    }
    for ref in re.findall(r"\]\(#([^)]+)\)", text):
        assert ref in anchors, f"docs/operations.md: no heading for #{ref}"


def test_the_environment_table_is_hookline_yaml_s_env_list_with_the_recipes_defaults() -> None:
    text = (REPO / "docs/operations.md").read_text(encoding="utf-8")
    section = text.split("The shipped recipes read these", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M)
    assert [name for name, _ in rows] == load_config(REPO / "hookline.yaml").env
    recipes = "".join(p.read_text() for p in sorted((REPO / "recipes").glob("*.yaml")))
    for name, default in rows:
        if default.startswith("`"):  # a channel or a duration: the recipes' own default
            value = default.strip().strip("`")
            assert f"env.{name} | default('{value}', true)" in recipes, name
        else:
            assert f"env.{name} | default(" not in recipes.replace(
                f"env.{name} | default('')", ""
            ), name


def test_the_readme_fits_a_screen() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 70, len(lines)
