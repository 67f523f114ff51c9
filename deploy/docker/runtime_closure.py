"""The runtime closure of an installed distribution, and pruning everything else from a venv.

The image's build stage installs the whole of ``requirements.lock`` (the tested versions,
``--no-deps``) and the fedmatch wheel, then runs ``runtime_closure.py --prune fedmatch``
(``--extras ray`` for a node that searches on Ray) to uninstall what the running services
never import (the test and lint tools of the lock's
dev extra, pip itself), so the image carries only the tested runtime set. A requirement
the lock leaves out on purpose (``opencv-python``: ``opencv-python-headless`` provides the
same ``cv2``) is reported and skipped, exactly as ``pip install --no-deps`` skips it.

Run with no flag it prints the closure, one ``name==version`` a line.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

__all__ = ["canonical", "runtime_closure"]

# Never uninstalled by name here: pip is removed last, by itself.
_TOOLS = {"pip"}


def canonical(name: str) -> str:
    """The PEP 503 normalized form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path, extras: tuple[str, ...]) -> list[str]:
    """The requirements ``pyproject`` declares: its dependencies and those of ``extras``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra {unknown[0]!r}")
    return [*project["dependencies"], *(r for e in extras for r in optional[e])]


def runtime_closure(
    root: str, extras: tuple[str, ...] = (), pyproject: Path | None = None
) -> tuple[dict[str, str], set[str]]:
    """``({name: version} of every installed distribution ``root`` needs at run time with
    ``extras``, {names required but not installed})``, following markers and extras. With
    ``pyproject``, the root's own requirements are read from it (the source of truth, when
    the installed metadata may be older)."""
    found: dict[str, str] = {}
    missing: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    if pyproject is not None:
        found[canonical(root)] = metadata.version(root)
        seen.add((canonical(root), frozenset(extras)))
        todo = []
        for line in _declared(pyproject, extras):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append((req.name, frozenset(req.extras)))
    while todo:
        name, wanted = todo.pop()
        key = (canonical(name), wanted)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(canonical(name))
            continue
        found[canonical(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in sorted(wanted)] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return found, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the distribution whose runtime needs are kept")
    parser.add_argument(
        "--extras", default="", help="extras of root to keep too, comma-separated (e.g. ray)"
    )
    parser.add_argument("--prune", action="store_true", help="uninstall everything else")
    parser.add_argument("--pyproject", type=Path, help="read root's requirements from here")
    args = parser.parse_args(argv)
    extras = tuple(e.strip() for e in args.extras.split(",") if e.strip())
    keep, missing = runtime_closure(args.root, extras, args.pyproject)
    for name in sorted(missing):
        print(f"not installed (left out of the lock): {name}", file=sys.stderr)
    if not args.prune:
        print("\n".join(f"{n}=={v}" for n, v in sorted(keep.items())))
        return 0
    installed = {canonical(d.metadata["Name"]) for d in metadata.distributions()}
    extra = sorted(installed - set(keep) - _TOOLS)
    if extra:
        pip = [sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet"]
        subprocess.run([*pip, *extra], check=True)  # noqa: S603 - our own interpreter's pip
    print(f"kept {len(keep)} distributions, removed {len(extra)}: {' '.join(extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
