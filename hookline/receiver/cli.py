"""``hookline serve``: run the receiver under uvicorn (uvloop + httptools when installed)."""

from __future__ import annotations

import importlib.util

import click


def _best(module: str, fast: str, fallback: str) -> str:
    return fast if importlib.util.find_spec(module) is not None else fallback


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free).")
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="hookline.yaml (default: $HOOKLINE_CONFIG or ./hookline.yaml).",
)
def serve(host: str, port: int, config_path: str | None) -> None:
    """Receive webhooks: POST /webhooks/<source>, answered once stored in the inbox."""
    import uvicorn

    from hookline.config import get_settings, load_config
    from hookline.errors import ConfigError
    from hookline.receiver.app import create_app
    from hookline.receiver.logs import configure_logging

    settings = get_settings()
    try:
        configure_logging(settings.log_format, settings.log_level)
        config = load_config(config_path) if config_path else load_config(settings.config)
        app = create_app(config, settings=settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop=_best("uvloop", "uvloop", "asyncio"),
        http=_best("httptools", "httptools", "h11"),
        access_log=False,  # the receiver logs one structured line per request itself
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
