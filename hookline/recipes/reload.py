"""Recipes that follow their files while a process runs.

`RecipeSource` holds the active `RecipeSet` of `hookline up`, `hookline dispatch` and
`hookline worker`, and replaces it when the recipe files or hookline.yaml's ``env:`` list
change, never with a set that fails a check `hookline check` makes:

    every `interval` seconds (`watch`), and before a worker refuses a run (`lookup`):
      stat the recipe files and hookline.yaml (path, mtime, size, inode)
        as last time ........................................ nothing
        else hash their bytes
          the active set's, or the edit refused last ........ nothing (no repeated errors)
          else `check_recipes` (every check of `hookline check` and of start-up)
            problems ... one ERROR line each; the active set stays
            none ....... swapped in: one reference assignment, so the next match uses it;
                         a run that already took its `Recipe` keeps it to the end

A load during which the files changed again is dropped and retried at the next poll: an
editor half-way through a save is not reported as a broken recipe.

Each process reloads on its own and they converge within `interval` of a change, provided
every machine has the same files (docs/operations.md#changing-recipes). A worker asked to
run a recipe it does not have (a dispatcher reloaded first) looks at its files before it
refuses the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from hookline.config import HooklineConfig, load_config
from hookline.errors import HooklineError
from hookline.recipes.errors import RecipeLoadError
from hookline.recipes.event import Event
from hookline.recipes.loader import LoadResult, check_recipes, discover
from hookline.recipes.matcher import MatchResult, RecipeSet
from hookline.recipes.models import ActionLike, Recipe

log = logging.getLogger("hookline.recipes")

#: Names an error message lists; a larger set shows its count and fingerprint only.
SUMMARY_NAMES = 12


def summary(recipes: RecipeSet, limit: int | None = None) -> str:
    """``3 recipes (a, b, c), fingerprint 1a2b3c4d5e6f``, the names left out when there are
    more than ``limit``: what processes log and say."""
    n = len(recipes)
    names = [r.name for r in recipes]
    listed = f" ({', '.join(names)})" if 0 < n <= (n if limit is None else limit) else ""
    return f"{n} recipe{'s' if n != 1 else ''}{listed}, fingerprint {recipes.short_fingerprint}"


class RecipeSource:
    """The active recipe set, reloaded when its files change (see the module docstring).

    It reads like a `RecipeSet` (``recipes``, ``get``, ``match``, ``fingerprint`` ...), each
    call on the set active at that moment; `current` is that set.

    Args:
        paths: recipe files and folders (``HOOKLINE_RECIPES``).
        config: hookline.yaml as loaded at start-up; when it has a ``path``, that file is
            watched and read again with the recipes (its ``env:`` list is part of the set).
        actions: the action registry; default ``hookline.connectors.ACTIONS``.
        interval: seconds between looks at the files in `watch`; 0 turns reloading off
            (the set stays as loaded at start-up).

    Raises:
        RecipeLoadError: the recipes fail to load at start-up (every problem listed).
    """

    def __init__(
        self,
        paths: Iterable[Path | str],
        *,
        config: HooklineConfig,
        actions: Mapping[str, ActionLike] | None = None,
        interval: float = 2.0,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.interval = interval
        self.config = config
        self._actions = actions
        self._lock = threading.Lock()
        self.reloads = 0
        self.refused: list[str] = []
        """The problems of the edit refused last, while the files still hold it."""
        self._refused_key: str | None = None
        files, self._signature = self._stat()
        self._key = self._content_key(files)
        result = check_recipes(self.paths, config=config, actions=actions)
        for w in result.warnings:
            log.warning("%s", w)
        if result.problems:
            raise RecipeLoadError(result.problems)
        self.current = RecipeSet(result.recipes, fingerprint=result.fingerprint)
        self._digests = result.digests
        log.info(
            "recipes: %s, from %s (%s)",
            summary(self.current),
            ":".join(str(p) for p in self.paths),
            f"looked at every {interval:g}s" if interval > 0 else "reloading off",
        )

    # -- what a RecipeSet offers, on the active set --------------------------------------------

    @property
    def recipes(self) -> list[Recipe]:
        return self.current.recipes

    @property
    def fingerprint(self) -> str:
        return self.current.fingerprint

    @property
    def short_fingerprint(self) -> str:
        return self.current.short_fingerprint

    def __iter__(self) -> Iterator[Recipe]:
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)

    def get(self, name: str) -> Recipe | None:
        """The active recipe called ``name``, or None (the files are not looked at)."""
        return self.current.get(name)

    def match(self, event: Event, *, environ: Mapping[str, str] | None = None) -> list[MatchResult]:
        return self.current.match(event, environ=environ)

    def matching(self, event: Event, *, environ: Mapping[str, str] | None = None) -> list[Recipe]:
        return self.current.matching(event, environ=environ)

    # -- reloading ---------------------------------------------------------------------------

    async def watch(self, stop: asyncio.Event) -> None:
        """Look at the files every `interval` seconds until ``stop`` is set."""
        failed = ""
        while self.interval > 0 and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
                return
            except TimeoutError:
                pass
            try:
                await self.refresh()
                failed = ""
            except Exception as exc:  # e.g. a folder it may not read: the process goes on
                if repr(exc) != failed:  # said once, not every interval
                    log.exception(
                        "cannot look at the recipe files (the active recipes stay, %s); "
                        "trying again every %gs",
                        self.current.short_fingerprint,
                        self.interval,
                    )
                failed = repr(exc)

    async def refresh(self) -> bool:
        """`check`, in a thread (a reload validates and compiles every recipe)."""
        return await asyncio.to_thread(self.check)

    async def lookup(self, name: str, *, look: bool = False) -> Recipe | None:
        """The active recipe ``name``. The files are looked at first when there is no such
        recipe, or with ``look``: a dispatcher that reloaded before this process may have
        dispatched a recipe (or a version of it) this process has not loaded yet."""
        recipe = self.current.get(name)
        if (recipe is None or look) and self.interval > 0:
            await self.refresh()
            recipe = self.current.get(name)
        return recipe

    def check(self) -> bool:
        """Look at the files now; reload if they changed. True when a new set is active."""
        with self._lock:
            files, signature = self._stat()
            if signature == self._signature:
                return False
            key = self._content_key(files)
            if key in (self._key, self._refused_key):
                self._signature = signature
                if key == self._key:
                    self._back()
                return False
            result, config, problems = self._load()
            if self._stat()[1] != signature:
                return False  # changed while being read: the next look loads the final files
            self._signature = signature
            if result is None or config is None or problems:
                self._refuse(key, problems)
                return False
            self._key = key
            for w in result.warnings:
                log.warning("%s", w)
            env_before, self.config = self.config.env, config
            if result.fingerprint == self.current.fingerprint:
                self._back()  # e.g. hookline.yaml changed outside `env:`
                return False
            self.refused, self._refused_key = [], None
            self._swap(result, env_changed=sorted(set(env_before)) != sorted(set(config.env)))
            return True

    def _load(self) -> tuple[LoadResult | None, HooklineConfig | None, list[str]]:
        try:
            config = self.config if self.config.path is None else load_config(self.config.path)
        except HooklineError as exc:
            return None, None, [str(exc)]
        result = check_recipes(self.paths, config=config, actions=self._actions)
        return result, config, [str(p) for p in result.problems]

    def _back(self) -> None:
        """The files hold the active set again: a refused edit was undone."""
        if self.refused:
            log.info(
                "the recipe files are back to the active recipes (%s); the refused edit is gone",
                self.current.short_fingerprint,
            )
            self.refused, self._refused_key = [], None

    def _refuse(self, key: str, problems: list[str]) -> None:
        for p in problems:
            log.error(
                "recipe reload refused: %s; the previous recipes stay active (%s)",
                p,
                self.current.short_fingerprint,
            )
        self.refused, self._refused_key = problems, key

    def _swap(self, result: LoadResult, *, env_changed: bool) -> None:
        old, new = self.current, RecipeSet(result.recipes, fingerprint=result.fingerprint)
        before, after = {r.name for r in old}, {r.name for r in new}
        changes = [
            f"{what}: {', '.join(sorted(names))}"
            for what, names in (
                ("added", after - before),
                ("changed", {n for n in before & after if self._digests[n] != result.digests[n]}),
                ("removed", before - after),
            )
            if names
        ]
        if env_changed:
            changes.append("hookline.yaml env: changed")
        self.current, self._digests = new, result.digests
        self.reloads += 1
        log.info(
            "recipes reloaded: %s (was %s); %s",
            summary(new),
            old.short_fingerprint,
            "; ".join(changes) or "files renamed",
        )

    def _watched(self) -> list[Path]:
        return [self.config.path] if self.config.path is not None else []

    def _stat(self) -> tuple[list[Path], tuple[object, ...]]:
        """The recipe files now, and what their stat says (a cheap look for changes)."""
        files, problems = discover(self.paths)
        seen: list[object] = [str(p.path) for p in problems]  # a folder that vanished
        for f in [*files, *self._watched()]:
            try:
                st = f.stat()
                seen.append((str(f), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError as exc:
                seen.append((str(f), type(exc).__name__))
        return files, tuple(seen)

    def _content_key(self, files: list[Path]) -> str:
        """A hash of the bytes the set is built from: a touch or a save without change is
        not a reload, and an edit refused once is not reported again."""
        digest = hashlib.sha256()
        for f in [*files, *self._watched()]:
            try:
                data = f.read_bytes()
            except OSError as exc:
                data = f"<{type(exc).__name__}>".encode()
            digest.update(str(f).encode() + b"\0" + hashlib.sha256(data).digest())
        return digest.hexdigest()


def not_loaded(recipes: RecipeSet | RecipeSource, name: object) -> str:
    """Why a worker cannot run recipe ``name``, and what brings its processes together."""
    message = (
        f"recipe {name!r} is not loaded by this worker (it has "
        f"{summary(_active(recipes), SUMMARY_NAMES)}): "
        "it was removed or renamed after the event was dispatched, or this worker reads other "
        "recipe files than the dispatcher that created the run (give every process the same "
        "HOOKLINE_RECIPES files, docs/operations.md#changing-recipes)"
    )
    if isinstance(recipes, RecipeSource) and recipes.refused:
        message += f"; this worker refused the last edit of its recipes: {recipes.refused[0]}"
    return message


def _active(recipes: RecipeSet | RecipeSource) -> RecipeSet:
    return recipes.current if isinstance(recipes, RecipeSource) else recipes


__all__ = ["RecipeSource", "not_loaded", "summary"]
