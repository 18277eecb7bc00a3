"""Log lines as the Flux controllers write them, and the context that fills them.

Contract:

* JSON encoding writes one object per line with zap's keys and order: ``level``, ``ts``
  (ISO8601, UTC, milliseconds: ``2022-08-02T12:56:34.961Z``, zap's ISO8601TimeEncoder),
  ``logger`` (omitted for the root logger, and inside a reconcile, whose lines carry
  controller-runtime's context instead, as Flux's do), ``msg``, then the bound context
  (``controller``, ``controllerGroup``, ``controllerKind``, ``<Kind>: {name, namespace}``,
  ``namespace``, ``name``, ``reconcileID``), then per-call fields, then ``error``.
  ``flux logs`` parses these lines.
* Console encoding (``fluxd dev``) writes the same fields tab-separated for humans.
* :func:`bind` attaches fields to every line logged in the current task (and tasks it
  starts) until the ``with`` block ends; sibling tasks never see each other's fields.
* Per-call fields: ``log.info("msg", extra={"revision": rev})``, or
  ``extra=fields(name=...)`` for keys that ``LogRecord`` reserves (``name``, ``args``...).
  A field named like a core key (``msg``, ``ts``...) is written as ``msg_``.
* Secrets never reach the stream: values under secret-like keys (``data``, ``password``,
  ``token``, ``ca.crt``...) are masked at any depth, and ``scheme://user:pass@host`` loses
  its userinfo in every string, including the message and the error.
* :func:`setup` configures the root logger and may be called again to change the level or
  encoding at run time; it installs exactly one handler of its own.
* :class:`LogThrottle` bounds how often one kind of line is written (events a stranger can
  cause at will: malformed requests, refused connections); the lines held back are
  counted and the count is reported with the next line let through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import logging
import math
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TextIO

__all__ = [
    "LEVELS",
    "TRACE",
    "ConsoleFormatter",
    "JSONFormatter",
    "LogThrottle",
    "bind",
    "bound",
    "fields",
    "redact",
    "setup",
    "strip_url_credentials",
]

#: Below DEBUG, like Flux's ``--log-level=trace`` (logr V(2)).
TRACE = 5
#: ``--log-level`` values, as Flux accepts them (plus ``warn``).
LEVELS: Mapping[str, int] = MappingProxyType({
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
})
ENCODINGS = ("json", "console")
MASK = "***"

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Not state: a per-task key. Each asyncio task runs in its own copy of the context.
_context: ContextVar[Mapping[str, Any]] = ContextVar("fluxd_log_context", default=_EMPTY)

_FIELDS_ATTR = "fluxd_fields"
_STACK_ATTR = "fluxd_stacktrace"
# A field may not replace these; it is written as "<key>_" instead.
_CORE_KEYS = frozenset({"level", "ts", "logger", "msg", "error", "stacktrace"})
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", _FIELDS_ATTR, _STACK_ATTR,
}


# -- context ---------------------------------------------------------------------------


@contextlib.contextmanager
def bind(**values: Any) -> Iterator[None]:
    """Add ``values`` to every log line of this task (and its children) inside the block."""
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)


def bound() -> Mapping[str, Any]:
    """The fields bound in the current context (read-only)."""
    return MappingProxyType(dict(_context.get()))


def fields(*, with_stacktrace: bool = False, **values: Any) -> dict[str, Any]:
    """``extra=`` for per-call fields, including names ``LogRecord`` reserves (``name``).

    ``with_stacktrace`` writes the exception's stack trace at any level (for unexpected
    errors: bugs); otherwise stack traces appear only at debug level and below.
    """
    extra: dict[str, Any] = {_FIELDS_ATTR: values}
    if with_stacktrace:
        extra[_STACK_ATTR] = True
    return extra


# -- redaction -------------------------------------------------------------------------

# Keys compared lowercased with punctuation removed: "ca.crt" -> "cacrt".
_SECRET_KEYS = frozenset({
    "data", "stringdata", "binarydata", "password", "passwd", "token", "bearertoken",
    "identity", "cacrt", "tlscrt", "tlskey", "cafile", "certfile", "keyfile", "secret",
    "clientsecret", "apikey", "accesskey", "secretkey", "secretaccesskey", "sessiontoken",
    "privatekey", "passphrase", "authorization", "proxyauthorization", "cookie",
    "setcookie", "credentials", "sopsasc", "sopsagekey", "agekey", "sopsvaultpath",
})
_SECRET_SUFFIXES = ("password", "token", "secret", "passphrase", "privatekey", "apikey")
_RAW_SECRET_SUFFIXES = (".asc", ".agekey", ".key", ".pem")
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@?#]*@")


def _is_secret_key(key: str) -> bool:
    if key.lower().endswith(_RAW_SECRET_SUFFIXES):
        return True
    norm = re.sub(r"[^a-z0-9]", "", key.lower())
    return norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES)


def strip_url_credentials(text: str) -> str:
    """Remove the userinfo of every URL in ``text``: ``https://u:p@h/x`` -> ``https://h/x``."""
    if "@" not in text:
        return text
    return _USERINFO.sub(r"\g<scheme>", text)


def _masked(value: Any) -> Any:
    # Keep a mapping's keys (which Secret keys exist is useful and not secret).
    if isinstance(value, Mapping):
        return {str(k): MASK for k in value}
    return MASK


def redact(value: Any) -> Any:
    """A JSON-friendly copy of ``value`` with secret-like keys masked and URLs stripped."""
    if isinstance(value, str):
        return strip_url_credentials(value)
    if isinstance(value, Mapping):
        return {
            str(k): _masked(v) if _is_secret_key(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, enum.Enum):
        return redact(value.value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact(dataclasses.asdict(value))
    if isinstance(value, BaseException):
        return strip_url_credentials(_error_text(value))
    return strip_url_credentials(str(value))


# -- formatting ------------------------------------------------------------------------


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


class JSONFormatter(logging.Formatter):
    """One JSON object per record, keys as zap writes them for Flux."""

    def __init__(self, *, stacktraces: bool = False) -> None:
        super().__init__()
        #: Add a ``stacktrace`` key for exceptions (Flux does at debug level and below).
        self.stacktraces = stacktraces

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as an ordered, redacted mapping."""
        out: dict[str, Any] = {"level": _level_name(record.levelno), "ts": _timestamp(record)}
        context = _context.get()
        if record.name and record.name != "root" and "reconcileID" not in context:
            out["logger"] = record.name
        out["msg"] = strip_url_credentials(record.getMessage())
        extra: dict[str, Any] = dict(context)
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                extra[key] = value
        extra.update(getattr(record, _FIELDS_ATTR, None) or {})
        error = extra.pop("error", None)
        if error is None and record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
        for key, value in redact(extra).items():
            out[f"{key}_" if key in _CORE_KEYS else key] = value
        if error is not None:
            out["error"] = redact(error)
        if record.exc_info and (self.stacktraces or getattr(record, _STACK_ATTR, False)):
            out["stacktrace"] = strip_url_credentials(
                "".join(traceback.format_exception(*record.exc_info)).rstrip())
        elif record.stack_info:
            out["stacktrace"] = strip_url_credentials(record.stack_info)
        return out

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.entry(record), ensure_ascii=False, default=str)


class ConsoleFormatter(JSONFormatter):
    """``ts  level  logger  msg  {fields}`` tab-separated, like zap's console encoder."""

    def format(self, record: logging.LogRecord) -> str:
        entry = self.entry(record)
        stack = entry.pop("stacktrace", None)
        head = [entry.pop("ts"), entry.pop("level")]
        logger = entry.pop("logger", None)
        if logger:
            head.append(logger)
        head.append(entry.pop("msg"))
        if entry:
            head.append(json.dumps(entry, ensure_ascii=False, default=str))
        line = "\t".join(head)
        return f"{line}\n{stack}" if stack else line


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup` owns on the root logger."""


def setup(level: str = "info", encoding: str = "json", *,
          stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as ``encoding`` at ``level``.

    Calling it again replaces the level, the encoding and the stream in place: handlers
    not installed here (pytest's, for instance) are left alone.
    """
    try:
        levelno = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level {level!r} is not one of {sorted(LEVELS)}") from None
    if encoding not in ENCODINGS:
        raise ValueError(f"log encoding {encoding!r} is not one of {ENCODINGS}")
    target = stream if stream is not None else sys.stderr
    formatter_class = JSONFormatter if encoding == "json" else ConsoleFormatter
    formatter = formatter_class(stacktraces=levelno <= logging.DEBUG)

    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    handler = next((h for h in ours if h.stream is target), None)
    for other in ours:
        if other is not handler:
            root.removeHandler(other)
            other.close()
    if handler is None:
        handler = _Handler(target)
        root.addHandler(handler)
    handler.setFormatter(formatter)
    root.setLevel(levelno)
    return handler


# -- throttling ------------------------------------------------------------------------


class LogThrottle:
    """At most ``burst`` lines of one kind per ``interval`` seconds; the rest are counted.

    ``admit()`` before writing a line: ``None`` means hold it back, a number means write it
    and report that many lines held back before it. ``overdue()`` hands over the count of
    an interval that is over, for a summary line when no further line comes to carry it.
    Time is ``monotonic()`` (the injected clock's), so tests need not wait.
    """

    def __init__(self, *, interval: float, burst: int,
                 monotonic: Callable[[], float]) -> None:
        self.interval = interval
        self.burst = burst
        self._monotonic = monotonic
        self._window_start = -math.inf
        self._passed = 0
        self._held = 0

    def admit(self) -> int | None:
        now = self._monotonic()
        if now - self._window_start >= self.interval:
            self._window_start, self._passed = now, 0
        if self._passed >= self.burst:
            self._held += 1
            return None
        self._passed += 1
        held, self._held = self._held, 0
        return held

    def overdue(self) -> int:
        if self._held and self._monotonic() - self._window_start >= self.interval:
            held, self._held = self._held, 0
            return held
        return 0
