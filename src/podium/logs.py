"""Structured logs: one line per event, JSON when stderr is not a terminal."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Credentials as they appear in log text: a `token=` (or `*_token=`) query value, a
# `psk_` service credential, a Bearer value, and any JWT wherever it stands.
_SECRETS = re.compile(
    r"(?i:(?<=token=)|(?<=token%3d))[^&\s\"'#]+"
    r"|psk_[A-Za-z0-9_-]+"
    r"|(?i:(?<=bearer )|(?<=bearer%20))[^\s\"',]+"
    r"|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with every credential replaced by [redacted]."""
    return _SECRETS.sub(REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record so no credential reaches a handler: message, extras, traceback.

    On the handlers, not a logger: records of every logger reach it, uvicorn's own
    (its WebSocket lines carry the path with the query string) included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(vars(record).items()):
            if key not in _STD and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# What uvicorn logs at error level (with a traceback) although a client caused it: one
# info line each, so a hostile client cannot flood the error log or page an operator.
CLIENT_FAULTS = ("Invalid UTF-8 sequence received from client.",)


class ClientFaultsAreInfo(logging.Filter):
    """On the uvicorn.error logger: a client's protocol fault is not a server error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.msg in CLIENT_FAULTS:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    # The filter leaves the traceback redacted in exc_text; format it only without one.
    if record.exc_text:
        return record.exc_text
    return formatter.formatException(record.exc_info) if record.exc_info else ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        if exc := _exception_text(self, record):
            out["exc"] = exc
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STD)
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()} {extra}".rstrip()
        if exc := _exception_text(self, record):
            line += "\n" + exc
        return line


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if sys.stderr.isatty() else JsonFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientFaultsAreInfo) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(ClientFaultsAreInfo())
    # Per-request access lines come from our middleware, with request ids.
    logging.getLogger("uvicorn.access").disabled = True
