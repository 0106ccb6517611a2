"""Regression tests of the receiver-side findings of the security and reliability review
(issue 11). Each test fails on the code before its fix."""

from __future__ import annotations

import base64
import secrets as pysecrets
from pathlib import Path
from typing import Any

import pytest

from hookline.config import CoreSettings, HooklineConfig
from hookline.errors import ConfigError
from hookline.receiver.app import create_app

pytestmark = pytest.mark.anyio


def _app(tmp_path: Path, sources: dict[str, Any], env: dict[str, str]) -> Any:
    cfg = HooklineConfig(sources=sources)
    cfg.path = tmp_path / "hookline.yaml"
    return create_app(cfg, settings=CoreSettings(home=tmp_path), environ=env)


# -- 1. empty or short HMAC keys -----------------------------------------------------------


def test_unset_whsec_variable_refuses_to_start_naming_source_and_variable(
    tmp_path: Path,
) -> None:
    """``whsec_${VAR:-}`` with VAR unset used to leave the key b"" (an empty-key HMAC)."""
    sources = {"std": {"scheme": "standard", "secrets": ["whsec_${STD_WEBHOOK_SECRET:-}"]}}
    with pytest.raises(ConfigError, match=r"sources\.std\.secrets.*STD_WEBHOOK_SECRET"):
        _app(tmp_path, sources, {})


@pytest.mark.parametrize(
    ("scheme", "value", "length", "minimum"),
    [
        ("standard", "whsec_" + base64.b64encode(b"k" * 16).decode(), 16, 24),
        ("solveforce", " ", 1, 16),
        ("github", "fifteen-bytes!!", 15, 16),
        ("slack", "x" * 8, 8, 16),
        ("stripe", "whsec_short", 11, 16),
    ],
)
def test_short_key_refuses_to_start_naming_source_and_variable(
    tmp_path: Path, scheme: str, value: str, length: int, minimum: int
) -> None:
    sources = {"partner": {"scheme": scheme, "secrets": ["${PARTNER_SECRET}"]}}
    with pytest.raises(ConfigError) as err:
        _app(tmp_path, sources, {"PARTNER_SECRET": value})
    message = str(err.value)
    assert "sources.partner.secrets[0]" in message and "PARTNER_SECRET" in message
    assert f"is {length} bytes" in message and f"at least {minimum} bytes" in message


def test_short_literal_secret_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sources\.gh\.secrets\[0\].*written in the file"):
        _app(tmp_path, {"gh": {"scheme": "github", "secrets": ["hunter2"]}}, {})


def test_keys_at_the_minimum_start_and_empty_rotation_slots_are_skipped(tmp_path: Path) -> None:
    std_key = pysecrets.token_bytes(24)
    sources = {
        "std": {
            "scheme": "standard",
            "secrets": ["${STD_SECRET}", "whsec_${STD_SECRET_OLD:-}"],
        },
        "sf": {"scheme": "solveforce", "secrets": ["${SF_SECRET}", "${SF_SECRET_OLD:-}"]},
    }
    env = {"STD_SECRET": "whsec_" + base64.b64encode(std_key).decode(), "SF_SECRET": "s" * 16}
    app = _app(tmp_path, sources, env)
    assert app.state.hookline.sources["std"].keys == (std_key,)
    assert app.state.hookline.sources["sf"].keys == (b"s" * 16,)
