"""``hookline serve``: run the receiver under uvicorn (uvloop + httptools when installed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import click
from starlette.applications import Starlette

from hookline.cli import CommandError, path_option


def _best(module: str, fast: str, fallback: str) -> str:
    return fast if importlib.util.find_spec(module) is not None else fallback


def app_factory() -> Starlette:
    """The receiver app with logging configured from HOOKLINE_* (what each worker runs)."""
    from hookline.config import get_settings
    from hookline.logs import configure_logging
    from hookline.receiver.app import create_app

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings=settings)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@path_option(
    "--config",
    "config_path",
    file=True,
    help="hookline.yaml (default: $HOOKLINE_CONFIG or ./hookline.yaml).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes sharing the port (and the inbox).",
)
def serve(host: str, port: int, config_path: Path | None, workers: int) -> None:
    """Receive webhooks: POST /webhooks/<source>, answered once stored in the inbox."""
    import uvicorn

    from hookline.config import get_settings, load_config
    from hookline.errors import ConfigError
    from hookline.receiver.app import create_app

    if config_path is not None:
        os.environ["HOOKLINE_CONFIG"] = str(config_path)  # the workers read it too
        get_settings.cache_clear()
    settings = get_settings()
    try:
        # Fail here, with the file and the field, rather than in every worker.
        create_app(load_config(settings.config), settings=settings)
        if settings.log_format not in ("text", "json"):
            raise ConfigError(f"HOOKLINE_LOG_FORMAT={settings.log_format!r}: use 'text' or 'json'")
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    uvicorn.run(
        "hookline.receiver.cli:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop=_best("uvloop", "uvloop", "asyncio"),
        http=_best("httptools", "httptools", "h11"),
        access_log=False,  # the receiver logs one structured line per request itself
        # X-Forwarded-For is believed only from receiver.trusted_proxies (hookline.yaml),
        # not from uvicorn's default 127.0.0.1: one place decides, for the IP allowlists.
        proxy_headers=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
