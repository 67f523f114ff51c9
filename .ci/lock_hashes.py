"""Rewrite requirements.lock with the SHA-256 of every file PyPI publishes for each pin.

`make` installs the lock with ``pip --require-hashes``: a wheel that differs from the one
published when the lock was made (a compromised mirror, a re-uploaded file) is refused. Every
file of a release is listed (all platforms and the sdist), as pip-compile --generate-hashes
does, so the lock installs on any machine the release supports.

Usage: python .ci/lock_hashes.py [requirements.lock]   (needs access to pypi.org)
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_INDEX = "https://pypi.org/pypi/{name}/json"


def hashes(name: str, version: str) -> list[str]:
    # The project's page (this index serves no per-release pages): its releases by version.
    with urllib.request.urlopen(_INDEX.format(name=name), timeout=60) as r:  # noqa: S310 (https)
        files = json.load(r)["releases"].get(version, [])
    found = sorted({f["digests"]["sha256"] for f in files})
    if not found:
        raise SystemExit(f"{name}=={version}: PyPI lists no files")
    return found


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock")
    out: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        if stripped.startswith("--hash"):
            continue  # the previous run's hashes: recomputed below
        match = _PIN.match(stripped)
        if match is None:
            raise SystemExit(f"not an exact pin: {line!r}")
        name, version = match.groups()
        digests = hashes(name, version)
        out.append(f"{name}=={version} \\")
        out.extend(
            f"    --hash=sha256:{d}" + (" \\" if i < len(digests) - 1 else "")
            for i, d in enumerate(digests)
        )
        print(f"{name}=={version}: {len(digests)} files", file=sys.stderr)
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
