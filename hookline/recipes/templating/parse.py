"""Parsing without rendering, for the static checks of `hookline check`."""

from __future__ import annotations

import re

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser

from hookline.recipes.templating.environment import ENV

_GITHUB_STYLE = re.compile(r"\$\{\{")


def ast_template(source: str) -> nodes.Template:
    """Parse (not compile) a template, for static checks."""
    return ENV.parse(source)


def ast_expression(source: str) -> nodes.Expr:
    """Parse an expression, for static checks; raises ``TemplateSyntaxError``."""
    parser = Parser(ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        tok = parser.stream.current
        raise TemplateSyntaxError(
            f"unexpected {tok.value!r} after the expression", tok.lineno, None, None
        )
    return expr


def looks_like_github_syntax(source: str) -> bool:
    """``${{ ... }}`` is GitHub Actions syntax, not Jinja."""
    return bool(_GITHUB_STYLE.search(source))
