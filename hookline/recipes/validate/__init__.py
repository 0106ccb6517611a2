"""The checks `hookline check` runs on one recipe file (`FileChecker`).

- `report`: where a problem is (file, line, step, field) and its hint (`did_you_mean`).
- `structure`: pydantic's errors of the recipe models as located, hinted problems.
- `templates`: each template's syntax and the names, fields and env names it may read.
- `checker`: the walk over one file: event patterns, step ids, actions and parameters.
"""

from __future__ import annotations

from hookline.recipes.validate.checker import FileChecker
from hookline.recipes.validate.report import did_you_mean

__all__ = ["FileChecker", "did_you_mean"]
