"""build_client and settings: hookline.yaml vs environment, missing settings, secrets, TLS."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from hookline.config import load_config
from hookline.connectors import build_client, configured, servicenow, slack
from hookline.connectors.errors import NotConfiguredError, PermanentError, TransientError
from hookline.connectors.settings import load_settings
from hookline.connectors.slack import SlackSettings
from vendor_fakes import FakeVendors


@pytest.mark.parametrize(
    ("connector", "variables"),
    [
        ("slack", "SLACK_BOT_TOKEN"),
        ("slack_webhook", "SLACK_WEBHOOK_URL"),
        ("servicenow", "SERVICENOW_INSTANCE and SERVICENOW_USERNAME and SERVICENOW_PASSWORD"),
        ("salesforce", "SALESFORCE_USERNAME and SALESFORCE_PASSWORD"),
        ("inventory", "INVENTORY_API_URL and INVENTORY_API_TOKEN"),
    ],
)
def test_unconfigured_connector_names_the_variables(connector: str, variables: str) -> None:
    section = "slack" if connector == "slack_webhook" else connector
    with pytest.raises(NotConfiguredError) as caught:
        build_client(connector, environ={})
    assert str(caught.value) == (
        f"{section} is not configured: set {variables} (docs/connectors.md#{section})"
    )


def test_salesforce_session_needs_the_instance_url() -> None:
    with pytest.raises(NotConfiguredError, match="set SALESFORCE_INSTANCE_URL "):
        build_client("salesforce", environ={"SALESFORCE_SESSION_ID": "x"})


def test_http_needs_no_configuration() -> None:
    with build_client("http", environ={}) as client:
        assert isinstance(client, httpx.Client)


def test_unknown_connector() -> None:
    with pytest.raises(KeyError, match="unknown connector 'jira'; valid: slack, "):
        build_client("jira", environ={})


def test_yaml_section_overrides_env_defaults_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "hookline.yaml"
    path.write_text(
        "connections:\n  slack:\n    token: ${HOOKLINE_SLACK_TOKEN}\n    timeout: 3\n",
        encoding="utf-8",
    )
    config = load_config(path)
    env = {"HOOKLINE_SLACK_TOKEN": "xoxb-1", "SLACK_API_URL": "https://slack.test/api"}

    settings = load_settings("slack", SlackSettings, config, env)

    assert settings.model_dump(mode="json")["token"] == "**********"
    assert isinstance(settings, SlackSettings)
    assert settings.api_url == "https://slack.test/api/"
    assert settings.timeout == 3
    with pytest.raises(NotConfiguredError) as caught:
        build_client("slack", config, environ={})
    assert "environment variable HOOKLINE_SLACK_TOKEN is not set" in str(caught.value)
    assert "docs/connectors.md#slack" in str(caught.value)


def test_unknown_key_in_yaml_section_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "hookline.yaml"
    path.write_text("connections:\n  servicenow:\n    instnce: dev1\n", encoding="utf-8")
    with pytest.raises(
        NotConfiguredError,
        match=r"connections.servicenow.instnce: Extra inputs are not permitted "
        r"\(valid keys: timeout, instance, username, password\)",
    ):
        build_client("servicenow", load_config(path), environ={})


def test_invalid_value_names_its_variable() -> None:
    with pytest.raises(NotConfiguredError, match="SLACK_TIMEOUT: Input should be a valid number"):
        build_client("slack", environ={"SLACK_BOT_TOKEN": "x", "SLACK_TIMEOUT": "soon"})


def test_plain_http_servicenow_instance_is_rejected() -> None:
    env = {
        "SERVICENOW_INSTANCE": "http://dev1.example",
        "SERVICENOW_USERNAME": "u",
        "SERVICENOW_PASSWORD": "p",
    }
    with pytest.raises(NotConfiguredError, match="SERVICENOW_INSTANCE: .*https://"):
        build_client("servicenow", environ=env)


def test_instance_name_becomes_a_service_now_url() -> None:
    env = {"SERVICENOW_INSTANCE": "dev1234", "SERVICENOW_USERNAME": "u", "SERVICENOW_PASSWORD": "p"}
    assert build_client("servicenow", environ=env).instance == "https://dev1234.service-now.com"


def test_secrets_never_show_in_settings_repr() -> None:
    env = {"SERVICENOW_INSTANCE": "dev1", "SERVICENOW_USERNAME": "u", "SERVICENOW_PASSWORD": "pw-1"}
    settings = load_settings("servicenow", servicenow.ServiceNowSettings, None, env)
    assert "pw-1" not in repr(settings)
    assert "pw-1" not in str(settings)


def test_repo_hookline_yaml_works_from_the_environment(fakes: FakeVendors) -> None:
    config = load_config(Path(__file__).parents[2] / "hookline.yaml")
    for name in ("slack", "servicenow", "salesforce", "inventory", "http"):
        build_client(name, config, environ=fakes.env)


def test_our_ca_bundle_beats_the_process_requests_ca_bundle(
    fakes: FakeVendors, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A shell often exports REQUESTS_CA_BUNDLE=<system bundle>; requests would let it override
    # the CA the connector was configured with.
    system = tmp_path / "system.pem"
    system.write_text("", encoding="utf-8")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(system))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(system))
    from hookline.connectors import servicenow

    client = build_client("servicenow", environ=fakes.env)
    assert servicenow.create_incident(client, short_description="x")["created"] is True


def test_ssl_cert_file_alone_is_enough_for_every_client(fakes: FakeVendors) -> None:
    env = {k: v for k, v in fakes.env.items() if k != "REQUESTS_CA_BUNDLE"}
    from hookline.connectors import http, salesforce

    slack.post_message(build_client("slack", environ=env), channel="#a", text="x")
    servicenow.create_incident(build_client("servicenow", environ=env), short_description="x")
    fakes.salesforce.add_record("Account", {"Name": "A"})
    account = next(iter(fakes.salesforce.records["Account"]))
    salesforce.update_record(
        build_client("salesforce", environ=env), object="Account", id=account, fields={"Name": "B"}
    )
    http.request(build_client("http", environ=env), url=fakes.echo.url)


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hookline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_prefect_secret_reference_is_read_through_the_injected_loader(
    tmp_path: Path, fakes: FakeVendors
) -> None:
    config = load_config(
        _yaml(tmp_path, "connections:\n  slack:\n    token: prefect-secret:slack-bot-token\n")
    )
    env = {k: v for k, v in fakes.env.items() if k != "SLACK_BOT_TOKEN"}
    blocks = {"slack-bot-token": "xoxb-hookline-fake-token"}

    client = build_client("slack", config, environ=env, secrets=blocks.__getitem__)

    assert slack.post_message(client, channel="#a", text="x")["ts"]


def test_prefect_secret_without_a_loader_or_block_names_the_block(tmp_path: Path) -> None:
    config = load_config(
        _yaml(tmp_path, "connections:\n  slack:\n    token: prefect-secret:slack-bot-token\n")
    )
    with pytest.raises(NotConfiguredError, match="Prefect Secret block 'slack-bot-token'"):
        build_client("slack", config, environ={})
    with pytest.raises(
        NotConfiguredError,
        match=r"connections.slack.token: there is no Prefect Secret block 'slack-bot-token'",
    ) as info:
        build_client("slack", config, environ={}, secrets={}.__getitem__)
    assert not info.value.unset  # configured, wrongly: never a preview


def test_a_secret_that_cannot_be_read_now_is_transient_not_unconfigured(
    tmp_path: Path, fakes: FakeVendors
) -> None:
    """The Prefect API down while a Secret block is read used to be NotConfiguredError: a
    permanent failure, and under `hookline up` a silent "Preview" step that sent nothing."""
    config = load_config(
        _yaml(tmp_path, "connections:\n  slack:\n    token: prefect-secret:slack-bot-token\n")
    )
    env = {k: v for k, v in fakes.env.items() if k != "SLACK_BOT_TOKEN"}

    def prefect_down(name: str) -> str:
        # what Prefect's client raises with its API unreachable: a real refused connection
        with httpx.Client() as client:
            client.get("http://127.0.0.1:9/api/block_documents")
        raise AssertionError("unreachable")

    with pytest.raises(TransientError, match="reading the Prefect Secret block 'slack-bot-token'"):
        build_client("slack", config, environ=env, secrets=prefect_down)

    def prefect_503(name: str) -> str:
        request = httpx.Request("POST", "http://prefect.test/api/block_documents/filter")
        raise httpx.HTTPStatusError(
            "503", request=request, response=httpx.Response(503, request=request)
        )

    with pytest.raises(TransientError, match="HTTP 503") as info:
        build_client("slack", config, environ=env, secrets=prefect_503)
    assert info.value.status == 503

    def broken(name: str) -> str:
        raise RuntimeError("the block's schema changed")

    with pytest.raises(PermanentError, match="RuntimeError: the block's schema changed") as err:
        build_client("slack", config, environ=env, secrets=broken)
    assert not isinstance(err.value, NotConfiguredError)


@pytest.mark.parametrize(
    ("connector", "environ", "unset"),
    [
        ("slack", {}, True),
        ("servicenow", {}, True),
        ("servicenow", {"SERVICENOW_INSTANCE": "dev1"}, False),
        ("salesforce", {}, True),
        ("salesforce", {"SALESFORCE_SESSION_ID": "x"}, False),
        ("inventory", {"INVENTORY_API_URL": "https://inv.test"}, False),
    ],
)
def test_only_a_connector_with_no_configuration_at_all_is_unset(
    connector: str, environ: dict[str, str], unset: bool
) -> None:
    """`hookline up` previews an unset connector; a half-configured one must fail instead."""
    with pytest.raises(NotConfiguredError) as info:
        build_client(connector, environ=environ)
    assert info.value.unset is unset
    assert configured(connector, environ=environ) is not unset  # what `hookline up` lists


def test_configured_reads_settings_only(env: dict[str, str], fakes: FakeVendors) -> None:
    """`hookline up` asks at start which connectors are configured: that reads no Prefect
    Secret (a reference is configuration) and logs in nowhere (it used to build every
    client, a Salesforce password login included)."""
    assert configured("slack", environ={"SLACK_BOT_TOKEN": "prefect-secret:slack-bot-token"})
    login = {
        "SALESFORCE_USERNAME": "hookline@example.com",
        "SALESFORCE_PASSWORD": "pw",
        "SALESFORCE_DOMAIN": fakes.salesforce.login_domain(),
        "SSL_CERT_FILE": env["SSL_CERT_FILE"],
    }
    assert configured("salesforce", environ=login)
    assert fakes.salesforce.calls == []
    assert configured("http", environ={}) and configured("memory", environ={})


def test_the_step_timeout_lowers_the_client_timeout(fakes: FakeVendors) -> None:
    """A call the step gave up on must end by itself: its client gets the step's timeout."""
    slow = build_client("slack", environ=fakes.env, timeout=0.3)
    assert slow.timeout == 0.3
    assert build_client("slack", environ=fakes.env).timeout == 10
    assert build_client("slack", environ=fakes.env, timeout=60).timeout == 10  # never raised
    with build_client("http", environ={}, timeout=0.5) as client:
        assert client.timeout.read == 0.5
    session = build_client("servicenow", environ=fakes.env, timeout=0.25).session
    assert session.get_adapter("https://x")._timeout == 0.25

    fakes.slack.fail_next(status=None, delay=3.0, path="chat.postMessage")
    start = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        slack.post_message(slow, channel="#a", text="x")
    assert time.monotonic() - start < 1.5
