"""docs/connectors.md#adding-a-connector, done from this one file and nowhere else: a toy
``pager`` connector declared and registered here is validated by `hookline check`, shown by
the dry run (`hookline try`), listed by `hookline up`'s preview banner while unconfigured,
previewed by a flow in preview mode, and run by the engine against a fake API."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypedDict

import httpx
import pytest
from click.testing import CliRunner, Result
from pydantic import Field, SecretStr

from hookline import samples
from hookline.cli import main
from hookline.config import HooklineConfig, get_settings
from hookline.connectors import (
    ACTIONS,
    CONNECTORS,
    ENV_DEFAULTS,
    ClientContext,
    Connector,
    NotConfiguredError,
    PermanentError,
    build_client,
    register,
    unconfigured,
    unregister,
)
from hookline.connectors._http import error_for_exception, error_for_status
from hookline.connectors.settings import ConnectorSettings
from vendor_fakes import FakeVendors

# --- the connector: what a new vendor module holds ---------------------------------------


class PagerSettings(ConnectorSettings):
    """``connections.pager``: read from PAGER_URL, PAGER_TOKEN, PAGER_TIMEOUT by default."""

    url: str | None = Field(default=None, description="Pager API base URL.")
    token: SecretStr | None = Field(default=None, description="API token.")


def make_client(settings: PagerSettings, context: ClientContext) -> httpx.Client:
    token = settings.token.get_secret_value() if settings.token else ""
    return httpx.Client(
        base_url=str(settings.url).rstrip("/") + "/",
        headers={"Authorization": f"Bearer {token}"},
        verify=context.verify(),
        timeout=settings.timeout,
    )


class PageOutput(TypedDict):
    status: int
    dedup_key: str


def page(
    client: httpx.Client,
    *,
    service: str,
    summary: str,
    severity: Literal["critical", "error", "warning", "info"] = "error",
    idempotency_key: str | None = None,
) -> PageOutput:
    """Page the on-call engineer of a service (one page per step: the key deduplicates)."""
    body = {"service": service, "summary": summary, "severity": severity}
    body["dedup_key"] = idempotency_key or f"{service}:{summary}"
    try:
        response = client.post("enqueue", json=body)
    except httpx.HTTPError as exc:
        mapped = error_for_exception("pager", exc, what="POST enqueue")
        raise mapped or PermanentError(f"pager: {exc}", connector="pager") from None
    if response.status_code >= 400:
        raise error_for_status(
            "pager", response.status_code, response.headers, response.text, what="POST enqueue"
        )
    return {"status": response.status_code, "dedup_key": body["dedup_key"]}


CONNECTOR = Connector(
    name="pager",
    settings=PagerSettings,
    client=make_client,
    requires=("url", "token"),
    actions=(page,),
)

# --- the tests -------------------------------------------------------------------------

RECIPE = """
name: page-oncall
on: service.status.changed
when: data.current_status == 'outage'
defaults: { retries: 0, timeout: 5s }
steps:
  - id: page
    uses: pager.page
    with:
      service: "{{ data.service_name }}"
      summary: "{{ data.service_name }} is {{ data.current_status }}"
      severity: "{{ 'critical' if data.impact == 'high' else 'error' }}"
  - id: tell
    uses: slack.post_message
    with:
      channel: "#oncall"
      text: "paged ({{ steps.page.dedup_key }})"
"""


@pytest.fixture
def pager() -> Iterator[Connector[PagerSettings]]:
    register(CONNECTOR)
    try:
        yield CONNECTOR
    finally:
        unregister(CONNECTOR.name)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "page.yaml").write_text(textwrap.dedent(RECIPE), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name in ("HOOKLINE_RECIPES", "HOOKLINE_CONFIG", "PAGER_URL", "PAGER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def outage() -> dict[str, object]:
    payload = samples.load("service.status.changed")
    payload["event_id"] = f"evt_{uuid.uuid4().hex[:12]}"  # Prefect's keys outlive a test
    payload["data"].update(current_status="outage", impact="high")
    return payload


def test_registering_declares_the_action_its_settings_and_its_errors(
    pager: Connector[PagerSettings],
) -> None:
    action = ACTIONS["pager.page"]
    assert action.connector == "pager" and CONNECTORS["pager"] is pager
    assert list(action.params.parameters) == ["service", "summary", "severity", "idempotency_key"]
    assert action.outputs == ("status", "dedup_key")
    assert ENV_DEFAULTS["pager"] == {
        "timeout": "${PAGER_TIMEOUT:-10}",
        "url": "${PAGER_URL:-}",
        "token": "${PAGER_TOKEN:-}",
    }
    with pytest.raises(NotConfiguredError) as info:
        build_client("pager", environ={})
    assert str(info.value) == (
        "pager is not configured: set PAGER_URL and PAGER_TOKEN (docs/connectors.md#pager)"
    )
    assert info.value.unset
    with pytest.raises(ValueError, match="'pager' is already registered"):
        register(CONNECTOR)


def test_a_wrong_declaration_is_refused_saying_why() -> None:
    with pytest.raises(ValueError, match=r"requires unknown settings \['tokn'\]; valid: timeout, "):
        Connector(
            name="pager",
            settings=PagerSettings,
            client=make_client,
            requires=("tokn",),
            actions=(page,),
        )
    other = Connector(
        name="pager", section="slack", settings=PagerSettings, client=make_client, actions=(page,)
    )
    with pytest.raises(ValueError, match="connections.slack is read with SlackSettings already"):
        register(other)
    assert "pager" not in CONNECTORS and "slack.page" not in ACTIONS


def test_the_editor_schema_knows_its_parameters(pager: Connector[PagerSettings]) -> None:
    from hookline.recipes.schema import recipe_schema

    text = json.dumps(recipe_schema())
    assert '"const": "pager.page"' in text
    assert "Literal['critical', 'error', 'warning', 'info']" in text


def test_unregistering_forgets_it(pager: Connector[PagerSettings]) -> None:
    unregister("pager")
    try:
        assert "pager.page" not in ACTIONS and "pager" not in ENV_DEFAULTS
        with pytest.raises(KeyError, match="unknown connector 'pager'; valid: slack, "):
            build_client("pager", environ={})
    finally:
        register(CONNECTOR)


def test_hookline_check_validates_its_steps(pager: Connector[PagerSettings], project: Path) -> None:
    r = run("check", "recipes")
    assert r.exit_code == 0, r.output
    assert "ok: 1 recipe (page-oncall)" in r.output

    bad = RECIPE.replace("name: page-oncall", "name: bad").replace(
        "severity: \"{{ 'critical' if data.impact == 'high' else 'error' }}\"", "severity: sev1"
    )
    (project / "recipes" / "bad.yaml").write_text(textwrap.dedent(bad), encoding="utf-8")
    r = run("check", "recipes")
    assert r.exit_code == 1
    assert (
        "bad.yaml:12:17: step 'page': with.severity: 'sev1' is not a valid "
        "Literal['critical', 'error', 'warning', 'info']"
    ) in r.output


def test_the_dry_run_shows_its_step(pager: Connector[PagerSettings], project: Path) -> None:
    r = run("try", "--sample", "service.status.changed", "--all", "page-oncall")
    assert r.exit_code == 0, r.output
    assert "1. page (pager.page)" in r.output
    assert 'service: "Primary Voice Service"' in r.output
    assert 'text: "paged (<steps.page.dedup_key>)"' in r.output


def test_hookline_up_lists_it_for_preview_until_it_is_configured(
    pager: Connector[PagerSettings],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hookline.engine.up import _print_banner
    from hookline.recipes import RecipeSet

    assert "pager" in unconfigured(environ={})
    assert "pager" not in unconfigured(environ={"PAGER_URL": "https://p", "PAGER_TOKEN": "t"})
    half = {"PAGER_URL": "https://p"}
    assert "pager" not in unconfigured(environ=half), "half-configured: its steps fail"

    monkeypatch.delenv("PAGER_URL", raising=False)
    monkeypatch.delenv("PAGER_TOKEN", raising=False)

    recipes = RecipeSet([])
    _print_banner("http://127.0.0.1:1", "http://127.0.0.1:2", recipes, "whsec_dev_0123456789", True)
    banner = capsys.readouterr().out
    assert "PREVIEW MODE for" in banner
    assert "pager" in banner.split("PREVIEW MODE for", 1)[1].split(":", 1)[0]


@pytest.mark.anyio
@pytest.mark.slow
async def test_the_engine_previews_then_runs_it(
    pager: Connector[PagerSettings], prefect_api: str, tmp_path: Path, fakes: FakeVendors
) -> None:
    from tests.engine.harness import running_engine

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "page.yaml").write_text(textwrap.dedent(RECIPE), encoding="utf-8")
    environ = {**os.environ, **fakes.env}
    async with running_engine(
        prefect_api, tmp_path / "home", str(recipes), HooklineConfig(env=[]), environ
    ) as engine:
        engine.runtime.preview = True  # as under `hookline up`, with no PAGER_* set
        entry = await engine.run(outage())
        assert entry.status == "done", entry.last_error
        assert fakes.echo.calls_to("/pager") == []
        (previewed,) = fakes.slack.messages  # the next step ran on a placeholder output
        assert previewed["text"].startswith("paged (") and "page.dedup_key" in previewed["text"]

        engine.runtime.environ = {
            **environ,
            "PAGER_URL": f"{fakes.echo.url}/pager",
            "PAGER_TOKEN": "pager-token",
        }
        event = outage()
        entry = await engine.run(event)
        assert entry.status == "done", entry.last_error
        (call,) = fakes.echo.calls_to("/pager/enqueue")
        assert call.headers["Authorization"] == "Bearer pager-token"
        key = f"solveforce:{event['event_id']}:page-oncall:page"
        assert call.json == {
            "service": "Primary Voice Service",
            "summary": "Primary Voice Service is outage",
            "severity": "critical",
            "dedup_key": key,
        }
        assert fakes.slack.messages[-1]["text"] == f"paged ({key})"
