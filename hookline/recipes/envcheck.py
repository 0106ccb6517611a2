"""Which ``env.NAME`` a template reads without a guard, for `hookline check`.

At run time an ``env.NAME`` whose variable is not set is an error, unless the template says
what to do without it. `unguarded` finds, in a parsed template or expression, every
``env.NAME`` that is read in a way that fails when ``NAME`` is unset, given the variables that
*are* set (the environment `hookline check` runs in). Guarded, so not reported:

- ``env.NAME | default(...)`` (or ``| d(...)``), ``env.NAME is defined`` / ``is undefined``;
- a branch the environment rules out: the true side of ``{% if %}``, ``... if TEST else
  ...``, ``TEST and ...`` whose TEST is false in this environment, the other side when it is
  true (``{{ env.X if env.X is defined else '#ops' }}``). TEST is known only when it reads
  nothing but ``env`` (then it is evaluated, exactly as a run would); a TEST that reads the
  event may go either way, so both sides count;
- a whole step whose ``if`` is false in this environment (`known_truth` on the ``if``:
  ``if: env.ACCOUNTING_API_URL is defined`` skips the step, so its ``with`` never renders).

Anything else that reads an unset ``env.NAME`` (``| trim``, ``~``, a comparison, an ``if``
on it) fails at run time and is reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from jinja2 import nodes

from hookline.recipes.templating import ENV, JINJA_GLOBALS, EnvVars, time_limit

_DEFAULT_FILTERS = frozenset({"default", "d"})
_DEFINED_TESTS = frozenset({"defined", "undefined"})


def env_name(node: nodes.Node) -> str | None:
    """``NAME`` when ``node`` is ``env.NAME`` or ``env['NAME']``."""
    if isinstance(node, nodes.Getattr):
        target, name = node.node, node.attr
    elif (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        target, name = node.node, node.arg.value
    else:
        return None
    if isinstance(target, nodes.Name) and target.name == "env" and target.ctx == "load":
        return name
    return None


def known_truth(expr: nodes.Node, environ: Mapping[str, str]) -> bool | None:
    """True when ``expr`` is truthy (or raises) whatever the event, False when it is falsy
    (or raises), None when that depends on the event. ``environ``: the variables recipes may
    read that are set."""
    if isinstance(expr, nodes.And | nodes.Or):
        left, right = known_truth(expr.left, environ), known_truth(expr.right, environ)
        short = isinstance(expr, nodes.Or)  # `or` is true when either side is, `and` false
        if short in (left, right):
            return short
        if left is (not short) and right is (not short):
            return not short
        return None
    if isinstance(expr, nodes.Not):
        inner = known_truth(expr.node, environ)
        return None if inner is None else not inner
    if isinstance(expr, nodes.Const):
        return bool(expr.value)
    names = {n.name for n in expr.find_all(nodes.Name)}
    if not names or not names <= {"env", *JINJA_GLOBALS}:
        return None
    tree = nodes.Template([nodes.Output([expr], lineno=1)], lineno=1)
    tree.set_environment(ENV)
    try:
        template = ENV.template_class.from_code(ENV, ENV.compile(tree), ENV.make_globals(None))
        with time_limit():
            return bool(template.render(env=EnvVars(environ)))
    except Exception:  # raises in this environment: a run fails there, and it is reported
        return None


def unguarded(tree: nodes.Node, environ: Mapping[str, str]) -> list[tuple[str, int]]:
    """``(NAME, line)`` of each ``env.NAME`` in ``tree`` read without a guard (see the module
    docstring), in template order; ``environ``: the set variables recipes may read."""
    return list(_walk(tree, environ, guarded=False))


def _walk(
    node: nodes.Node, environ: Mapping[str, str], *, guarded: bool
) -> Iterator[tuple[str, int]]:
    name = env_name(node)
    if name is not None:
        if not guarded:
            yield name, node.lineno
        return
    if isinstance(node, nodes.Filter | nodes.Test):
        names = _DEFAULT_FILTERS if isinstance(node, nodes.Filter) else _DEFINED_TESTS
        for child in node.iter_child_nodes():
            yield from _walk(child, environ, guarded=child is node.node and node.name in names)
        return
    if isinstance(node, nodes.And | nodes.Or):
        yield from _walk(node.left, environ, guarded=False)
        if known_truth(node.left, environ) is not isinstance(node, nodes.Or):
            yield from _walk(node.right, environ, guarded=False)
        return
    if isinstance(node, nodes.CondExpr | nodes.If):
        yield from _branches(node, environ)
        return
    for child in node.iter_child_nodes():
        yield from _walk(child, environ, guarded=False)


def _branches(
    node: nodes.CondExpr | nodes.If, environ: Mapping[str, str]
) -> Iterator[tuple[str, int]]:
    """``{% if %}``/``{% elif %}``/``{% else %}`` and ``a if t else b``: a branch counts
    unless this environment rules it out."""
    if isinstance(node, nodes.CondExpr):
        arms: list[tuple[nodes.Node, list[nodes.Node]]] = [(node.test, [node.expr1])]
        rest: list[nodes.Node] = [node.expr2] if node.expr2 is not None else []
    else:
        arms = [(node.test, list(node.body)), *((e.test, list(e.body)) for e in node.elif_)]
        rest = list(node.else_)
    for test, body in arms:
        yield from _walk(test, environ, guarded=False)
        truth = known_truth(test, environ)
        if truth is not False:
            for child in body:
                yield from _walk(child, environ, guarded=False)
        if truth is True:
            return
    for child in rest:
        yield from _walk(child, environ, guarded=False)


__all__ = ["env_name", "known_truth", "unguarded"]
