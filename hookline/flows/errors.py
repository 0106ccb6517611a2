"""The recipe flow's errors.

HooklineError
└── FlowError
    ├── RuntimeMissingError   a recipe flow ran where no Runtime was installed
    └── RecipeRunError        a recipe run failed; names the step and the vendor's error
        └── RunRefusedError   the run's parameters are not a dispatch Hookline would make
"""

from __future__ import annotations

from hookline.errors import HooklineError


class FlowError(HooklineError):
    """Base class of the recipe flow's errors."""
