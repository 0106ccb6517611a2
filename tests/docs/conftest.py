"""Helpers for the docs tests: the console commands the docs show, and real processes to run
them against (a `hookline up`, or receivers, dispatcher and worker on PostgreSQL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/operations.md")

_FENCE = re.compile(r"^```(\w*)\s*$")


def console_commands(doc: str) -> list[tuple[int, str]]:
    """``(line, command)`` of every ``$ `` line in the doc's ```console blocks."""
    out: list[tuple[int, str]] = []
    lang: str | None = None
    for n, line in enumerate((REPO / doc).read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            lang = None if lang is not None else m.group(1)
            continue
        if lang == "console" and line.startswith("$ "):
            out.append((n, line[2:]))
    return out


def console_block(doc: str, first: str) -> tuple[list[str], list[str]]:
    """The ```console block whose first command starts with ``first``: (commands, output)."""
    lines = (REPO / doc).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line == "```console" and lines[i + 1].startswith("$ " + first):
            block = lines[i + 1 : lines.index("```", i + 1)]
            return [b[2:] for b in block if b.startswith("$ ")], [
                b for b in block if not b.startswith("$ ")
            ]
    raise AssertionError(f"{doc}: no console block starting with {first!r}")


def code_block(doc: str, lang: str, index: int = 0) -> str:
    """The text of the ``index``-th ```lang block of the doc."""
    text = (REPO / doc).read_text(encoding="utf-8")
    blocks = re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M)
    return str(blocks[index])


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without Hookline/Prefect/vendor settings of the developer's shell."""
    drop = ("HOOKLINE_", "PREFECT_", "SLACK_", "SERVICENOW_", "SALESFORCE_", "INVENTORY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("SOLVEFORCE_WEBHOOK_SECRET", None)
    env.pop("ACCOUNTING_API_URL", None)
    # under `make test`, a nested make would print "Entering/Leaving directory" lines
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
        env.pop(name, None)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"
    env.update(extra)
    return env


@dataclass
class Proc:
    """A long-running command of the docs, started for a test."""

    args: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.args}: no {text!r} after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM (Ctrl-C for `hookline up`), and the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if "up" in self.args else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> Proc:
    """Start ``args`` (``hookline`` is this venv's) with output to ``log``."""
    argv = [sys.executable, "-m", "hookline", *args[1:]] if args[0].endswith("hookline") else args
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Proc(args, proc, log)


def bash(script: str, *, cwd: Path, env: dict[str, str], timeout: float = 60) -> str:
    """Run ``script`` with bash -e; its stdout (stderr is shown on failure)."""
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"{script}\nexit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout
