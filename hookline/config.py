"""hookline.yaml and the core settings every layer shares.

`hookline.yaml` has five sections, each validated by the layer that owns it:

- ``sources``     (receiver): who may send webhooks and how they sign them;
- ``connections`` (connectors): how to reach Slack, ServiceNow, Salesforce, ...;
- ``env``         (recipes): the environment variables recipes may read as ``env.NAME``;
- ``receiver``    (receiver): body limit and other HTTP settings;
- ``artifacts``   (flows): what each run's artifact shows of the event (payload, masking).

Values may reference the environment as ``${NAME}`` or ``${NAME:-default}``; references are
resolved when a layer asks for the value (`resolve`), so a missing secret is reported by the
layer that needs it, naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from hookline.errors import ConfigError

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class CoreSettings(BaseSettings):
    """Settings read from the environment (prefix ``HOOKLINE_``)."""

    model_config = SettingsConfigDict(env_prefix="HOOKLINE_", extra="ignore")

    home: Path = Field(
        default=Path(".hookline"),
        description="Directory for the SQLite inbox, the embedded Prefect database and logs.",
    )
    config: Path = Field(default=Path("hookline.yaml"), description="Path to hookline.yaml.")
    database_url: str | None = Field(
        default=None,
        description="postgresql://... to keep the inbox in PostgreSQL; unset means SQLite "
        "under HOOKLINE_HOME.",
    )
    recipes: str = Field(
        default="recipes",
        description="Recipe files or folders, separated by ':'.",
    )
    recipes_reload_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How often `up`, `dispatch` and `worker` look for changed recipe files "
        "(hookline.recipes.reload); 0: recipes are read at start-up only.",
    )
    log_format: str = Field(default="text", description="'text' or 'json'.")
    log_level: str = Field(default="INFO", description="Python logging level name.")

    @property
    def recipe_paths(self) -> list[Path]:
        return [Path(p) for p in self.recipes.split(":") if p]

    @property
    def sqlite_path(self) -> Path:
        return self.home / "inbox.sqlite3"


@lru_cache(maxsize=1)
def get_settings() -> CoreSettings:
    """The process's core settings, read once from the environment."""
    return CoreSettings()


class HooklineConfig(BaseModel):
    """The parsed hookline.yaml; each section is validated further by its owner."""

    model_config = ConfigDict(extra="forbid")

    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    env: list[str] = Field(default_factory=list)
    receiver: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, Any] = Field(default_factory=dict)
    path: Path | None = Field(default=None, exclude=True)


def load_config(path: Path | str | None = None) -> HooklineConfig:
    """Read and validate the top level of hookline.yaml.

    Raises:
        ConfigError: the file is missing, is not YAML, or has an unknown section.
    """
    p = Path(path) if path is not None else get_settings().config
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; set HOOKLINE_CONFIG or create hookline.yaml"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, not {type(raw).__name__}")
    try:
        cfg = HooklineConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"{p}: {problems} (valid sections: sources, connections, env, receiver, artifacts)"
        ) from None
    cfg.path = p
    return cfg


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) as a directory only its owner may enter (0700), and
    take group and other access away from an existing one: HOOKLINE_HOME holds the inbox (every
    payload) and the development signing secret."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def private_file(path: Path, text: str | None = None) -> Path:
    """Create ``path`` readable by its owner only (0600) from the start, or take group and
    other access away from an existing one; write ``text`` into it when given."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if text is not None else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        if text is not None:
            os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def referenced_variables(value: str) -> list[str]:
    """The environment variables ``${NAME}`` / ``${NAME:-default}`` in ``value``, in order."""
    return [m.group(1) for m in _REF.finditer(value)]


def resolve(value: Any, *, where: str, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in strings, recursively.

    Raises:
        ConfigError: a referenced variable is unset and has no default; the message names
            the variable and ``where`` it was referenced.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set")

        return _REF.sub(sub, value)
    if isinstance(value, list):
        return [resolve(v, where=f"{where}[{i}]", environ=env) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: resolve(v, where=f"{where}.{k}", environ=env) for k, v in value.items()}
    return value
