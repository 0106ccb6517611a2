"""Structured logs: ``key=value`` text or one JSON object per line (HOOKLINE_LOG_FORMAT=json).

Context goes in ``extra=`` (``source``, ``event_id``, ``outcome``, ``reason``, ...), so every
line about an event carries its id. Header values and secrets are never passed to a logger.
Text lines escape control characters (a newline becomes backslash-n) in the message and in
every value: an event id or a request path is chosen by the sender, and must not start a
forged log line. JSON lines are escaped by JSON itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

_NO_LOCK = contextlib.nullcontext()

_STANDARD = frozenset(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_controls(value: Any) -> str:
    """``value`` as text on one line: control characters written as escapes."""
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub(_escape_one, text) if _CONTROL.search(text) else text


def _pairs(extras: dict[str, Any]) -> str:
    return " ".join(f"{k}={escape_controls(v)}" for k, v in extras.items())


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


_second: list[Any] = [-1, ""]


def _utc(created: float) -> str:
    """``2024-01-15T10:30:00.123Z``; the seconds part is formatted once per second."""
    sec = int(created)
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int((created - sec) * 1000):03d}Z"


class Line(NamedTuple):
    """What one log line says, with or without a LogRecord behind it."""

    created: float
    level: str
    logger: str
    msg: str
    extras: dict[str, Any]
    exc: str | None = None


def _json_line(entry: Line) -> str:
    out: dict[str, Any] = {
        "time": _utc(entry.created),
        "level": entry.level,
        "logger": entry.logger,
        "msg": entry.msg,
    }
    out.update(entry.extras)
    if entry.exc is not None:
        out["exc"] = entry.exc
    return json.dumps(out, default=str)


def _text_line(entry: Line) -> str:
    text = f"{_utc(entry.created)} {entry.level} {entry.logger} {escape_controls(entry.msg)}"
    if entry.extras:
        text += " " + _pairs(entry.extras)
    if entry.exc is not None:
        text += "\n" + entry.exc
    return text


class _LineFormatter(logging.Formatter):
    """A formatter whose line can also be written without a LogRecord (`fast_info`)."""

    def __init__(self, line: Callable[[Line], str]) -> None:
        super().__init__()
        self.line = line

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            Line(
                record.created,
                record.levelname,
                record.name,
                record.getMessage(),
                _extras(record),
                exc,
            )
        )


class JsonFormatter(_LineFormatter):
    """One JSON object per line: time, level, logger, msg and the extras."""

    def __init__(self) -> None:
        super().__init__(_json_line)


class TextFormatter(_LineFormatter):
    """``time level logger msg key=value ...``."""

    def __init__(self) -> None:
        super().__init__(_text_line)


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that flushes at most every ``interval`` seconds (at once for WARNING
    and above): one write per line costs a system call per webhook at thousands a second.
    A line it does not flush at once is flushed within ``interval`` by a timer, so a quiet
    process (a dispatcher, a worker) never sits on its last lines; `logging.shutdown` flushes
    at exit. A SIGKILL can lose the last fraction of a second of INFO lines, never an event."""

    def __init__(self, stream: TextIO, interval: float = 0.25) -> None:
        super().__init__(stream)
        self.interval = interval
        self._last = 0.0
        self._timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record), urgent=record.levelno >= logging.WARNING)
        except Exception:
            self.handleError(record)

    def write(self, line: str, *, urgent: bool = False) -> None:
        """Write one line; flush now if ``urgent`` or due, else within ``interval``."""
        with self.lock or _NO_LOCK:
            self.stream.write(line + "\n")
            now = time.monotonic()
            if urgent or now - self._last >= self.interval:
                self._last = now
                self.stream.flush()
            elif self._timer is None:
                self._timer = threading.Timer(self.interval, self._flush_later)
                self._timer.daemon = True
                self._timer.start()

    def _flush_later(self) -> None:
        with self.lock or _NO_LOCK:
            self._timer = None
            self._last = time.monotonic()
            self.stream.flush()


_fast: list[BufferedStreamHandler | None] = [None]


def fast_info(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> bool:
    """Write one INFO line straight to the configured handler, skipping LogRecord creation
    (a third of a webhook's logging cost); False when logging is not ours (tests, embedding),
    and the caller then logs normally."""
    handler = _fast[0]
    if handler is None or not logger.isEnabledFor(logging.INFO) or logger.handlers:
        return False
    formatter = handler.formatter
    if not isinstance(formatter, _LineFormatter):
        return False
    line = formatter.line(Line(time.time(), "INFO", logger.name, msg, fields))
    handler.write(line)
    return True


def flush_logs() -> None:
    """Flush the ``hookline`` logger's handlers."""
    for handler in logging.getLogger("hookline").handlers:
        handler.flush()


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Send the ``hookline`` loggers to stderr in ``fmt`` ('text' or 'json')."""
    if fmt not in ("text", "json"):
        from hookline.errors import ConfigError

        raise ConfigError(f"HOOKLINE_LOG_FORMAT={fmt!r}: use 'text' or 'json'")
    stream = open(  # noqa: SIM115 - lives as long as the process
        sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8", closefd=False
    )
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger("hookline")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    _fast[0] = handler
    # Neither format shows thread or process names; not collecting them makes each record
    # cheaper, which matters at one line per webhook.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
