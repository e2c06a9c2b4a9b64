"""Log lines as text or JSON (``server.log_format``), each with the id of the request it belongs
to (``-`` outside one), so an upstream failure or a failed write-back can be found beside its
access line. ``memproxy serve`` installs this on the root logger, and uvicorn's loggers
propagate to it, so every line has one shape."""

from __future__ import annotations

import json
import logging
from typing import IO, Any

from proxy.access import current_request_id
from proxy.config import ServerSettings

_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "access"}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the running request's id, unless the caller gave one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message, and an access line's
    fields (method, route, status, ms, model, memory) at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        line.update(getattr(record, "access", None) or {})
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def log_handler(server: ServerSettings, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``server.log_format`` lines to ``stream`` (default stderr)."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if server.log_format == "json" else logging.Formatter(_TEXT))
    return handler


def configure_logging(server: ServerSettings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(log_handler(server))
    root.setLevel(server.log_level.upper())
    # A Chroma server (vector_index.host) is called through httpx, which logs every request at info.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
