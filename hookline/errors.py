"""The root of every error Hookline raises on purpose.

    HooklineError
    ├── ConfigError                      hookline.yaml or settings are wrong (hookline.config)
    ├── bodies.BodyError                 a Slack form body or its payload is unusable
    ├── receiver.errors.ReceiverError    signature, envelope (hookline.receiver)
    ├── inbox.InboxError                 the inbox cannot store or read now (hookline.inbox)
    ├── recipes.errors.RecipeError       loading, validating, rendering recipes (hookline.recipes)
    ├── connectors.errors.ConnectorError vendor calls (hookline.connectors)
    │   ├── TransientError               retry: timeouts, connection errors, 429, 5xx
    │   └── PermanentError               fail fast: auth, validation, not found, other 4xx
    ├── flows.errors.FlowError           a recipe run failed or was refused (hookline.flows)
    ├── engine.errors.EngineError        Prefect unavailable or incompatible, `hookline up` and
    │                                    `send` (hookline.engine)
    └── cli.CommandError                 a command cannot do what was asked: `error: ...`, exit 1
        └── CallError                    the command was called wrongly: exit 2

Each layer defines its own branch in its own package; this module holds only the root,
so that a connector never has to import the receiver to share an error type.
"""

from __future__ import annotations


class HooklineError(Exception):
    """Base class for every error Hookline raises on purpose."""


class ConfigError(HooklineError):
    """hookline.yaml, an environment variable or a setting is wrong; the message says which."""
