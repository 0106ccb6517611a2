"""Every error Hookline raises on purpose has a layer root under HooklineError, and the tree
drawn in hookline/errors.py names every root."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import hookline
from hookline.errors import HooklineError

#: Errors that must stay what a library expects: Jinja's sandbox catches its own SecurityError
#: family (a template over a limit), and the rendering code turns it into a RecipeRenderError.
FOREIGN = {"hookline.recipes.templating.limits.RenderLimitError"}


def _hookline_errors() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(hookline.__path__, "hookline."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")  # control flow inside one module, never raised out
            ):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_has_a_layer_root_drawn_in_the_error_tree() -> None:
    errors = _hookline_errors()
    assert len(errors) > 15
    strays = {n for n, cls in errors.items() if not issubclass(cls, HooklineError)} - FOREIGN
    assert strays == set()
    import hookline.errors as tree

    roots = {
        cls.__name__
        for cls in errors.values()
        if issubclass(cls, HooklineError) and cls.__mro__[1] is HooklineError
    }
    doc = tree.__doc__ or ""
    assert {r for r in roots if r not in doc} == set()
