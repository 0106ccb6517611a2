"""What each step of a recipe does: one semantics for the engine and the dry run.

A real run (`hookline.flows.recipe_flow`) and a dry run (`hookline try`, `hookline
test-recipes`, through `hookline.recipes.dryrun`) decide step outcomes here, and nowhere
else, so a recipe that passes its dry run behaves the same way when it runs. Nothing here
touches Prefect, a vendor or the clock.

- `decide` (one step, in its context): the step's ``if`` is false → *skip*, with the reason;
  the ``if`` raises → *fail*; else its ``with`` is rendered and converted to the action's
  parameter types → *run*, with the parameters, or *fail* when a template raises (an
  undefined name, ``env.NAME`` not set, a missing step output, a sandbox limit) or a value
  has the wrong type. The error text is the one a run records, shows in its artifact and
  sends to on-call as ``failure.error``.
- `Chain` (one recipe run): a step sees the outputs of the earlier steps that ran (a skipped
  or failed step is absent: ``steps.x is defined`` is false). In each section (``steps``,
  then ``on_failure``) the first failure of a step without ``continue_on_error`` stops the
  section; the steps after it are not reached. ``on_failure`` runs after a failure in
  ``steps``, with ``failure`` (``step``, ``uses``, ``error``, ``attempts``) and the outputs
  of every step that ran.

What only a real run does (calling the vendor and its retries, replaying succeeded steps,
previewing unconfigured connectors, cancelling between steps) and what only a dry run does
(placeholders for outputs and run fields) stay with each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hookline.recipes.errors import RecipeError, RecipeEvalError, RecipeRenderError
from hookline.recipes.templating import build_context, describe_error, render_params

if TYPE_CHECKING:
    from hookline.recipes.event import Event
    from hookline.recipes.models import Recipe, Step

#: Why a failed step with ``continue_on_error`` did not stop the recipe.
WENT_ON = "continue_on_error: the recipe went on"


@dataclass(frozen=True)
class Decision:
    """What one step does in its context, before any vendor is called."""

    step: Step
    outcome: Literal["run", "skip", "fail"]
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    error: RecipeError | None = None
    """When it fails: a `RecipeEvalError` (its ``if``) or `RecipeRenderError` (its ``with``)."""

    @property
    def message(self) -> str:
        """The error text (empty unless the step fails)."""
        return str(self.error) if self.error is not None else ""


def decide(
    step: Step, context: Mapping[str, Any], *, keep: Callable[[Any], bool] | None = None
) -> Decision:
    """Evaluate ``step``'s ``if`` and render its ``with`` in ``context``; never raises.

    ``keep``: rendered values passed as they are when their type is wrong (a dry run's
    placeholders). A failure's error is a fresh exception holding no frame of the render:
    the engine calls this in a worker thread, and freeing the frames of a render stopped at
    a limit must happen there, not on (and stalling) its event loop.
    """
    try:
        go = step.should_run(context)
    except RecipeError as exc:
        return Decision(step, "fail", error=RecipeEvalError(str(exc)))
    if not go:
        return Decision(step, "skip", reason=f'if "{step.if_}" is false')
    try:
        params = render_params(step, context, keep=keep)
    except RecipeError as exc:
        return Decision(step, "fail", error=RecipeRenderError(str(exc)))
    except Exception as exc:  # a parameter type that raised something of its own
        text = f"{step.where()}: with: {describe_error(exc)}"
        return Decision(step, "fail", error=RecipeRenderError(text))
    reason = f'if "{step.if_}" is true' if step.if_ is not None else ""
    return Decision(step, "run", reason=reason, params=params)


class Chain:
    """The order of one recipe run for one event: which step comes next, what it sees, when
    a section stops. Walk a section with `walk`; report each step's outcome (`ran`, `failed`;
    a skipped step needs no report) before taking the next."""

    def __init__(
        self,
        recipe: Recipe,
        event: Event,
        *,
        environ: Mapping[str, Any],
        run: Mapping[str, Any] | None = None,
        covered: Sequence[Event] = (),
    ) -> None:
        self.recipe = recipe
        self.event = event
        self.environ = environ
        self.run = run
        self.covered = covered
        self.outputs: dict[str, dict[str, Any]] = {}
        #: ``{step, uses, error, attempts}`` of the step that stopped ``steps``, or None.
        self.failure: dict[str, Any] | None = None
        self._stopped: dict[bool, str] = {}  # in_on_failure -> id of the step that stopped it

    def context(self, step: Step, *, failure: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What ``step``'s templates see now (``failure``: a stand-in for `failure` in an
        ``on_failure`` step when nothing failed, for a dry run)."""
        return build_context(
            self.event,
            recipe=self.recipe,
            steps=self.outputs,
            run=self.run,
            failure=(self.failure or failure) if step.in_on_failure else None,
            environ=self.environ,
            covered=self.covered,
        )

    def walk(
        self, steps: Iterable[Step], *, failure: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[Step, dict[str, Any]]]:
        """Each step of one section with its context, until a failure stops the section."""
        for step in steps:
            if step.in_on_failure in self._stopped:
                return
            yield step, self.context(step, failure=failure)

    def ran(self, step: Step, outputs: Mapping[str, Any]) -> None:
        """``step`` ran (or was replayed, or previewed): later steps see its outputs."""
        self.outputs[step.id] = dict(outputs)

    def failed(self, step: Step, error: str, attempts: int) -> str | None:
        """``step`` failed: the reason its section goes on (`WENT_ON`), or None when the
        section stops here (in ``steps``, `failure` then describes it)."""
        if step.continue_on_error:
            return WENT_ON
        self._stopped[step.in_on_failure] = step.id
        if not step.in_on_failure:
            self.failure = {
                "step": step.id,
                "uses": step.uses,
                "error": error,
                "attempts": attempts,
            }
        return None

    def not_reached(self, steps: Sequence[Step]) -> tuple[list[Step], str]:
        """The steps of ``steps`` after the one that stopped their section, and why."""
        if not steps or steps[0].in_on_failure not in self._stopped:
            return [], ""
        stop = self._stopped[steps[0].in_on_failure]
        ids = [s.id for s in steps]
        return list(steps[ids.index(stop) + 1 :]), f"step '{stop}' failed"


__all__ = ["WENT_ON", "Chain", "Decision", "decide"]
