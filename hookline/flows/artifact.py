"""The Markdown artifact each recipe run writes: what happened and, on failure, what to do next.

It is what on-call opens first, so it answers on its own page:

- **Outcome**: completed, ``PREVIEW: nothing was sent (slack is not configured)``, FAILED or
  CANCELLED;
- **Failure**: the failed step's whole error, in its own paragraph (wrapped: Prefect's UI clips
  table cells and scrolls code blocks sideways) and a **Next:** line naming the fix (set a
  variable, fix credentials, wait for the vendor, fix a template at ``file:line``) and the
  `hookline replay` command;
- **Steps**: one short row per step (outcome, attempts, vendor ids and links), then what a
  previewed step would have sent and the errors of steps that failed without stopping the run;
- **Event**: type, source, id, time, account, ``order_by`` / ``coalesce`` key, and the payload as
  pretty JSON, masked (`PayloadSettings`, hookline.yaml ``artifacts:``) and bounded.

The artifact is keyed `artifact_key` (``hookline-<recipe>-<event id>``), so Prefect's Artifacts
page lists it; each run of the same event and recipe (a retry, a replay) adds a version.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from hookline.errors import ConfigError
from hookline.recipes import Event, Recipe, build_context
from hookline.recipes.dryrun import MASK, mask

if TYPE_CHECKING:
    from hookline.config import HooklineConfig
    from hookline.flows.recipe_flow import StepRecord

KEY_MAX = 100
"""Longest artifact key; a longer one is cut and ends with a digest of the full name."""
PAYLOAD_MAX_CHARS = 20_000
"""The payload's pretty JSON is cut after this many characters (the inbox keeps it whole)."""
TEXT_MAX_CHARS = 4_000
"""One error or value is cut after this many characters."""
COVERED_MAX_ROWS = 50
"""Coalesced events listed; the rest are counted."""

LONG_WORD = 60
"""A word (no spaces) longer than this gets zero-width spaces, so that a UI can wrap it."""
ZWSP = "\u200b"

_UNSAFE_KEY = re.compile(r"[^a-z0-9]+")
_LONG_WORD = re.compile(rf"\S{{{LONG_WORD + 1},}}")


class PayloadSettings(BaseModel):
    """hookline.yaml ``artifacts:``: how much of the event a run's artifact shows.

    Values under secret-looking keys (token, password, secret, api_key, ...) and the values of
    secret-looking environment variables are always masked.
    """

    model_config = ConfigDict(extra="forbid")

    payload: StrictBool = Field(
        default=True, description="Show the event's payload (masked) in each run's artifact."
    )
    mask: list[StrictStr] = Field(
        default_factory=list,
        description="More keys whose values are masked wherever they appear in the payload "
        "(exact names, any case).",
    )


def payload_settings(config: HooklineConfig | None) -> PayloadSettings:
    """Validate hookline.yaml's ``artifacts:`` section.

    Raises:
        ConfigError: an unknown key or a wrong type, naming the file and the field.
    """
    raw = config.artifacts if config is not None else {}
    try:
        return PayloadSettings.model_validate(raw)
    except ValidationError as exc:
        where = f"{config.path}: " if config is not None and config.path else ""
        problems = "; ".join(
            f"artifacts.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"{where}{problems} (valid keys: payload: true|false, mask: [key names])"
        ) from None


def artifact_key(recipe: str, event_id: str) -> str:
    """``hookline-<recipe>-<event id>`` as a Prefect artifact key: lowercase letters, digits and
    dashes, at most `KEY_MAX` characters (a cut key ends with a digest of the full name)."""
    key = _UNSAFE_KEY.sub("-", f"hookline-{recipe}-{event_id}".lower()).strip("-")
    if len(key) <= KEY_MAX:
        return key
    digest = hashlib.sha256(f"{recipe}\0{event_id}".encode()).hexdigest()[:10]
    return f"{key[: KEY_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def connectors_previewed(records: Sequence[StepRecord]) -> list[str]:
    """The connectors of previewed steps, in order of first use."""
    names: list[str] = []
    for r in records:
        connector = r.uses.split(".", 1)[0]
        if r.status == "preview" and connector not in names:
            names.append(connector)
    return names


def preview_summary(records: Sequence[StepRecord]) -> str | None:
    """``PREVIEW: nothing was sent (slack, servicenow are not configured)``; None when no step
    was previewed."""
    names = connectors_previewed(records)
    if not names:
        return None
    listed = ", ".join(names)
    if not any(r.status == "completed" for r in records):
        verb = "is" if len(names) == 1 else "are"
        return f"PREVIEW: nothing was sent ({listed} {verb} not configured)"
    return f"PREVIEW: nothing was sent to {listed} (not configured); the other steps ran"


def outcome(failure: Mapping[str, Any] | None, records: Sequence[StepRecord]) -> str:
    """The artifact's outcome line."""
    preview = preview_summary(records)
    if failure is not None and failure.get("cancelled"):
        text = f"CANCELLED before step `{failure['step']}` (`hookline replay` runs the rest)"
    elif failure is not None:
        text = f"FAILED at step `{failure['step']}`"
    else:
        tolerated = [r.id for r in records if r.status == "failed"]
        if preview is not None:
            text = preview
            preview = None
        else:
            text = "completed"
        if tolerated:
            text += f"; step(s) {', '.join(f'`{t}`' for t in tolerated)} failed (see below)"
    return f"{text}; {preview}" if preview is not None else text


def replay_command(event: Event) -> str:
    """The `hookline replay` command line for ``event``."""
    return f"hookline replay {shlex.quote(event.event_id)} --source {shlex.quote(event.source)}"


_SET = re.compile(r"\bset ([A-Z][A-Z0-9_]*(?: and [A-Z][A-Z0-9_]*)*)")
_CONFIG = re.compile(r"is not configured|is misconfigured|Prefect Secret block")
_AUTH = re.compile(
    r"HTTP 40[13]\b|check the credentials|\(check [A-Z][A-Z0-9_]+;|invalid_auth|not_authed|"
    r"token_revoked|token_expired|account_inactive|INVALID_SESSION_ID|INVALID_LOGIN"
)
_TRANSIENT = re.compile(
    r"HTTP (?:429|5\d\d)\b|timed out|ratelimited|internal_error|fatal_error|"
    r"service_unavailable|request_timeout|failed: \w*(?:Error|gaierror)$"
)


def next_step(recipe: Recipe, event: Event, failure: Mapping[str, Any]) -> str:
    """What on-call does about ``failure``: the fix its error points at, then the replay."""
    replay = f"`{replay_command(event)}`"
    if failure.get("cancelled"):
        return f"{replay} runs the steps that did not run (those that did are not repeated)."
    error = str(failure.get("error") or "")
    connector = str(failure.get("uses") or "").split(".", 1)[0]
    docs = f"docs/connectors.md#{connector}"
    then = f"then {replay} (steps that already succeeded are not repeated)."
    try:
        step = recipe.step(str(failure["step"]))
        where = f"{step.path.name}:{step.line}" if step.path is not None else f"`{step.id}`"
    except KeyError:
        where = f"`{failure['step']}`"
    if error.startswith(("with:", "if:")):
        return (
            f"fix the template of step `{failure['step']}` ({where}) as the error says, "
            f"restart the worker so it runs the fixed recipe, {then}"
        )
    if _CONFIG.search(error):
        found = _SET.search(error)
        fix = f"set {found.group(1)}" if found else f"fix the {connector} connection"
        return (
            f"{fix} for the worker (environment or hookline.yaml `connections.{connector}`; "
            f"{docs}), restart it, {then}"
        )
    if "still running" in error:
        return (
            f"the call may have gone through after all: check {connector} for it; if it did "
            f"not happen, {then}"
        )
    if _AUTH.search(error):
        return f"fix {connector}'s credentials ({docs}), restart the worker, {then}"
    if _TRANSIENT.search(error):
        attempts = int(failure.get("attempts") or 1)
        return (
            f"{connector} was unreachable or failing ({attempts} attempt(s)): retry later; "
            f"once it answers, {then.removeprefix('then ')}"
        )
    return (
        f"{connector} refused the request: fix what the error names (step "
        f"`{failure['step']}`'s parameters at {where}, or the data in {connector}), {then}"
    )


def story(
    recipe: Recipe,
    event: Event,
    run: Mapping[str, Any],
    records: Sequence[StepRecord],
    failure: Mapping[str, Any] | None,
    covered: Sequence[Event] = (),
    *,
    settings: PayloadSettings,
    secrets: Sequence[str] = (),
    earlier: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The artifact's Markdown. ``secrets``: values masked wherever they appear; ``earlier``:
    the event's other runs of this recipe (``id``, ``state``, ``url``), newest first.

    Long text (errors, what a previewed step would send, event fields) is inline code in
    paragraphs and lists, which both Prefect UIs wrap; Prefect's own UI clips a table cell's
    inline code and scrolls a code block sideways, so tables hold short values only.
    """
    secret_list = list(secrets)
    lines = [
        f"# {recipe.name} / {event.event_id}",
        "",
        f"**Outcome**: {outcome(failure, records)}",
        "",
    ]
    if failure is not None:
        lines += ["## Failure", ""]
        if not failure.get("cancelled"):
            lines += [
                f"Step `{failure['step']}` (`{failure['uses']}`) failed after "
                f"{failure.get('attempts', 0)} attempt(s):",
                "",
                _wrapped(str(failure.get("error")), secret_list),
                "",
            ]
        lines += [f"**Next:** {next_step(recipe, event, failure)}", ""]
    lines += [
        "## Steps",
        "",
        "| step | action | outcome | attempts | details |",
        "|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in records:
        details: list[str] = []
        if r.status != "preview":  # a previewed step's outputs are placeholders
            for k in ("number", "status", "ts", "id"):
                if r.outputs.get(k) not in (None, ""):
                    details.append(_plain(_cut(f"{k}: {r.outputs[k]}", 40)))
            for k in ("link", "permalink"):
                url = r.outputs.get(k)
                if isinstance(url, str) and url.startswith(("https://", "http://")):
                    details.append(f"[{k}]({url.replace(')', '%29').replace(' ', '%20')})")
        said: list[str] = [_plain(r.reason)] if r.reason else []
        if r.error and failure is not None and r.id == failure.get("step"):
            details.append("error: see Failure above")
        elif r.error:
            said.append(f"failed after {r.attempts} attempt(s): {_wrapped(r.error, secret_list)}")
        if r.params is not None:
            sent = json.dumps(
                mask(r.params, secret_list), default=str, sort_keys=True, ensure_ascii=False
            )
            said.append(f"would send: {_wrapped(sent, [])}")
        if said:
            details.append("see below")
            notes.append(f"- `{r.id}`: " + "; ".join(said))
        lines.append(
            f"| {r.id} | `{r.uses}` | {r.status} | {r.attempts} | {'<br>'.join(details)} |"
        )
    if notes:
        lines += ["", *notes]
    lines += ["", *_event_section(recipe, event, settings, secret_list)]
    if covered:
        shown = list(covered)[:COVERED_MAX_ROWS]
        lines += [
            "",
            f"**Coalesced**: this run also covers {len(covered)} earlier event(s) of its burst "
            "(status `superseded`, `hookline events` lists them):",
            "",
            "| event | type | time |",
            "|---|---|---|",
            *(
                f"| {_plain(e.event_id)} | `{e.event_type}` | {e.timestamp_text or ''} |"
                for e in shown
            ),
        ]
        if len(covered) > len(shown):
            lines.append(f"| ... {len(covered) - len(shown)} more | | |")
    if earlier:
        lines += [
            "",
            "**Earlier runs of this event** (every run of it is tagged "
            f"`event-id:{_plain(event.event_id)}`):",
            "",
            *(
                f"- [{e['id']}]({e['url']}): {e['state']}"
                if e.get("url")
                else f"- {e['id']}: {e['state']} (a Retry from the UI; the run's state "
                "history has the earlier attempts)"
                for e in earlier
            ),
        ]
    if run.get("url"):
        lines += ["", f"[This run in Prefect]({run['url']})"]
    return "\n".join(lines) + "\n"


def description(
    recipe: Recipe, event: Event, failure: Mapping[str, Any] | None, records: Sequence[StepRecord]
) -> str:
    """One line for the Artifacts page: the outcome first (the page cuts long lines)."""
    text = outcome(failure, records).replace("`", "")
    return f"{text} | {recipe.name} for {event.event_type} {event.event_id}"


def _event_section(
    recipe: Recipe, event: Event, settings: PayloadSettings, secrets: list[str]
) -> list[str]:
    fields: list[tuple[str, str]] = [
        ("type", event.event_type),
        ("source", event.source),
        ("id", event.event_id),
        ("time", event.timestamp_text or "(none)"),
    ]
    if event.account not in (None, {}, ""):
        fields.append(
            (
                "account",
                json.dumps(
                    _masked(event.account, settings, secrets), default=str, ensure_ascii=False
                ),
            )
        )
    fields += _lane_keys(recipe, event)
    lines = ["## Event", ""]
    lines += [f"- **{name}**: {_wrapped(value, secrets, 300)}" for name, value in fields]
    lines += ["", "### Payload", ""]
    if not settings.payload:
        return [*lines, "Not shown: hookline.yaml sets `artifacts.payload: false`."]
    try:
        text = json.dumps(
            _masked(event.envelope, settings, secrets), indent=2, ensure_ascii=False, default=str
        )
    except RecursionError:
        return [*lines, "Not shown: the payload is nested too deeply to print."]
    keys = "secret-looking keys" + "".join(f", `{k}`" for k in settings.mask)
    note = f"Values under {keys} and known secret values are masked ({MASK})."
    if len(text) > PAYLOAD_MAX_CHARS:
        note += (
            f" The payload is {len(text):,} characters as JSON: the first "
            f"{PAYLOAD_MAX_CHARS:,} are shown."
        )
        text = text[:PAYLOAD_MAX_CHARS] + "\n..."
    return [*lines, *_fenced(text, "json"), "", note]


def _lane_keys(recipe: Recipe, event: Event) -> list[tuple[str, str]]:
    """``order key`` / ``coalesce key`` rows, rendered as the dispatcher renders them."""
    if recipe.compiled_order_by is None and recipe.compiled_coalesce_key is None:
        return []
    ctx = build_context(event, recipe=recipe, steps={}, run={}, failure=None, environ={})
    rows: list[tuple[str, str]] = []
    for name, render in (("order key", recipe.order_key), ("coalesce key", recipe.coalesce_key)):
        try:
            value = render(ctx)
        except Exception as exc:  # a bad key is the dispatcher's to report; show it here too
            value = f"(cannot render: {exc})"
        if value is not None:
            rows.append((name, value))
    return rows


def _masked(value: Any, settings: PayloadSettings, secrets: list[str]) -> Any:
    extra = {k.lower() for k in settings.mask}
    return mask(_mask_keys(value, extra) if extra else value, secrets)


def _mask_keys(value: Any, keys: set[str]) -> Any:
    if isinstance(value, Mapping):
        return {
            k: MASK if str(k).lower() in keys and v not in (None, "") else _mask_keys(v, keys)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask_keys(v, keys) for v in value]
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fenced(text: str, lang: str) -> list[str]:
    """A code block whose fence is longer than any backtick run inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", text, fence]


def _wrapped(text: str, secrets: list[str], limit: int = TEXT_MAX_CHARS) -> str:
    """``text`` masked and cut, as inline code, one span per line; a word longer than
    `LONG_WORD` gets zero-width spaces so that it wraps too."""
    text = _cut(str(mask(text, secrets)), limit)
    spans = []
    for line in text.splitlines() or [""]:
        line = _LONG_WORD.sub(lambda m: ZWSP.join(_chunks(m.group(0), LONG_WORD)), line)
        longest = max((len(m) for m in re.findall(r"`+", line)), default=0)
        ticks = "`" * (longest + 1)
        pad = " " if line.startswith("`") or line.endswith("`") or not line.strip() else ""
        spans.append(f"{ticks}{pad}{line}{pad}{ticks}")
    return "  \n".join(spans)


def _chunks(word: str, size: int) -> list[str]:
    return [word[i : i + size] for i in range(0, len(word), size)]


def _plain(text: str) -> str:
    """``text`` as literal Markdown text on one line (``<x>`` would be a link, ``*`` emphasis)."""
    return re.sub(r"([\\`*_\[\]<>|#~])", r"\\\1", " ".join(text.split()))
