"""Jinja2 for recipes: one sandboxed, strict, native-typed environment.

- ``ImmutableSandboxedEnvironment``: templates cannot reach Python internals
  (``''.__class__`` is refused) nor mutate the event (``data.update(...)`` is refused).
- ``StrictUndefined``: a missing name or key is an error, never an empty string; use
  ``x | default(...)`` or ``x is defined`` where absence is expected.
- Native types: ``"{{ 1 if x else 2 }}"`` renders the int ``1``; a template made of one
  expression renders that expression's value, anything else renders a string. Unlike Jinja's
  ``NativeEnvironment`` we never ``literal_eval`` strings, so a ZIP code ``"01234"`` or a
  ticket number ``"007"`` stays a string.
- ``a.b`` prefers the mapping key over the attribute: ``data.items`` is the payload's
  ``items`` field, not ``dict.items``.
- Slack mrkdwn parameters escape what each ``{{ }}`` inserts; ``| mrkdwn`` opts a value out.
- Resource limits: text, integers, widths and repeats are bounded before Python allocates
  them, and every render has a time limit; a limit raises `RenderLimitError` and the step (or
  ``when``) fails with a message naming it.

One concept a module:

- `limits`: the size and time limits, and the checks the environment runs before each
  operator, method call and filter.
- `escaping`: the ``mrkdwn`` filter and the escaping of Slack mrkdwn parameters.
- `timefilters`: the ``elapsed`` filter (``{{ data.opened_at | elapsed(timestamp) }}``).
- `context`: what a template sees (`build_context`).
- `environment`: the Jinja environment (`ENV`, `MRKDWN_ENV`) and its code generator.
- `render`: `Template`, `Expression`, compiling (cached) and rendering a step's ``with``.
- `parse`: parsing without rendering, for `hookline check`.
"""

from __future__ import annotations

from hookline.recipes.templating.context import EnvVars, build_context
from hookline.recipes.templating.environment import ENV, JINJA_GLOBALS
from hookline.recipes.templating.escaping import Mrkdwn, escape_mrkdwn, mrkdwn
from hookline.recipes.templating.limits import (
    MATCH_SECONDS,
    MAX_INT_BITS,
    MAX_TEXT,
    MAX_WIDTH,
    RENDER_SECONDS,
    RenderLimitError,
    time_limit,
)
from hookline.recipes.templating.parse import (
    ast_expression,
    ast_template,
    looks_like_github_syntax,
)
from hookline.recipes.templating.render import (
    Expression,
    Template,
    compile_expression,
    compile_template,
    compile_value,
    describe_error,
    evaluate,
    is_template,
    render_params,
    render_template,
    render_value,
)

__all__ = [
    "ENV",
    "JINJA_GLOBALS",
    "MATCH_SECONDS",
    "MAX_INT_BITS",
    "MAX_TEXT",
    "MAX_WIDTH",
    "RENDER_SECONDS",
    "EnvVars",
    "Expression",
    "Mrkdwn",
    "RenderLimitError",
    "Template",
    "ast_expression",
    "ast_template",
    "build_context",
    "compile_expression",
    "compile_template",
    "compile_value",
    "describe_error",
    "escape_mrkdwn",
    "evaluate",
    "is_template",
    "looks_like_github_syntax",
    "mrkdwn",
    "render_params",
    "render_template",
    "render_value",
    "time_limit",
]
