"""Log output: human text (the default) or one JSON object per line.

Chosen by ``--log-format json|text`` (a flag of the ``fedmatch`` command), else
``FEDMATCH_LOGGING_FORMAT``, else the ``[logging]`` table of the party's TOML file::

    [logging]
    format = "json"      # or "text"
    level = "info"       # debug, info, warning, error

A JSON line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``message`` and any ``extra=`` fields given to the log call. An exception is reported by its
class and the frames of its traceback only, never by its message: library exception text can
quote input bytes (the same rule as :mod:`fedmatch.grpcutil.errors`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fedmatch.config import load_section
from fedmatch.errors import ConfigError

__all__ = ["FORMATS", "JsonFormatter", "LoggingConfig", "configure_logging", "load_logging_config"]

FORMATS = ("text", "json")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}  # fmt: skip
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


@dataclass(frozen=True)
class LoggingConfig:
    format: str = "text"
    # Empty: the command's default (INFO for servers, WARNING for clients; -v gives INFO).
    level: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"logging.format must be one of {', '.join(FORMATS)}")
        if self.level and self.level.lower() not in _LEVELS:
            raise ConfigError(f"logging.level must be one of {', '.join(_LEVELS)}")

    def level_number(self, default: int) -> int:
        return _LEVELS[self.level.lower()] if self.level else default


def load_logging_config(path: Path | None, cli_format: str | None = None) -> LoggingConfig:
    """``[logging]`` of ``path`` (None: no file), then FEDMATCH_LOGGING_*, then the flag."""
    values = load_section(
        path, "logging", "FEDMATCH_LOGGING_", LoggingConfig, {"format": cli_format}
    )
    return LoggingConfig(**values)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            out["exc_type"] = exc_type.__name__
            out["exc_frames"] = [
                f"{frame.filename}:{frame.lineno} in {frame.name}"
                for frame in traceback.extract_tb(tb)
            ]
        # default=str: an extra field of another type is shown, never a reason to lose a line.
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(
    config: LoggingConfig, default_level: int, stream: TextIO | None = None
) -> None:
    """Replace the root logger's handlers with one writing ``config.format`` to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=config.level_number(default_level), handlers=[handler], force=True)
    # Python warnings would otherwise be written raw to stderr, between the JSON lines.
    logging.captureWarnings(config.format == "json")
