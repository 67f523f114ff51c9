"""Where a CA key's passphrase comes from: an environment variable or a file, never the
command line (where ``ps`` and shell histories would show it to every local user).

:func:`read_passphrase` takes the name of the variable or the path of the file (mode 0600,
its first line is the passphrase) and returns the passphrase's bytes, or None when neither
is given. No message carries the passphrase.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedmatch.errors import InvalidInput
from fedmatch.fileio import read_file

__all__ = ["read_passphrase"]


def read_passphrase(env: str | None, file: Path | None) -> bytes | None:
    """The passphrase in environment variable ``env`` or in ``file``; None if neither is
    named. Raises InvalidInput if both are named or the source is empty, ConfigError if
    the file is unreadable or group/other may read it."""
    if env and file is not None:
        raise InvalidInput("give a passphrase by environment variable or by file, not both")
    if env:
        value = os.environ.get(env)
        if not value:
            raise InvalidInput(f"environment variable {env} holding the passphrase is not set")
        return value.encode("utf-8")
    if file is None:
        return None
    lines = read_file(Path(file), private=True).splitlines()
    if not lines or not lines[0]:
        raise InvalidInput(f"passphrase file {file} is empty")
    return lines[0]
