"""JSON log lines: one object per line, the fields an operator greps for, no exception text."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from fedmatch.errors import ConfigError
from fedmatch.ops.logjson import LoggingConfig, configure_logging, load_logging_config


@pytest.fixture
def restore_root_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_extra_fields(
    restore_root_logging: object,
) -> None:
    out = io.StringIO()
    configure_logging(LoggingConfig(format="json"), logging.INFO, out)
    log = logging.getLogger("fedmatch.test")
    log.info("search query=%s records=%d", "q-1", 12, extra={"member_state": "IT"})
    log.debug("not at INFO")
    try:
        raise ValueError("bytes of an input: 0.123456")
    except ValueError:
        log.exception("handler failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "search query=q-1 records=12"
    assert (first["level"], first["logger"], first["member_state"]) == (
        "INFO",
        "fedmatch.test",
        "IT",
    )
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    # An exception is its class and frames, never its message (it may quote input).
    assert second["exc_type"] == "ValueError" and second["exc_frames"]
    assert "0.123456" not in lines[1]


def test_text_stays_the_default(restore_root_logging: object) -> None:
    out = io.StringIO()
    configure_logging(load_logging_config(None), logging.INFO, out)
    logging.getLogger("fedmatch.test").warning("plain")
    assert out.getvalue().rstrip().endswith("WARNING fedmatch.test: plain")


def test_flag_over_environment_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "party.toml"
    path.write_text('[logging]\nformat = "json"\nlevel = "debug"\n')
    assert load_logging_config(path) == LoggingConfig(format="json", level="debug")
    monkeypatch.setenv("FEDMATCH_LOGGING_FORMAT", "text")
    assert load_logging_config(path).format == "text"
    assert load_logging_config(path, "json").format == "json"
    assert load_logging_config(path).level_number(logging.WARNING) == logging.DEBUG
    for bad in ('format = "xml"', 'level = "loud"'):
        path.write_text(f"[logging]\n{bad}\n")
        monkeypatch.delenv("FEDMATCH_LOGGING_FORMAT")
        with pytest.raises(ConfigError, match=r"logging\."):
            load_logging_config(path)
        monkeypatch.setenv("FEDMATCH_LOGGING_FORMAT", "text")


def test_log_format_flag_before_or_after_the_serve_command() -> None:
    from fedmatch.cli.main import build_parser

    parse = build_parser().parse_args
    assert (
        parse(["node", "serve", "--config", "n.toml", "--log-format", "json"]).log_format == "json"
    )
    assert (
        parse(["--log-format", "json", "coordinator", "serve", "--config", "c.toml"]).log_format
        == "json"
    )
    assert parse(["node", "serve", "--config", "n.toml"]).log_format is None
