"""The committed stubs are exactly what `make protos` generates from proto/."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_protos(tmp_path: Path) -> None:
    protos = sorted((ROOT / "proto/fedmatch/rpc/v1").glob("*.proto"))
    assert protos, "no .proto files found"
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}",
            *map(str, protos),
        ],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    generated = tmp_path / "fedmatch/rpc/v1"
    committed = ROOT / "fedmatch/rpc/v1"
    names = sorted(p.name for p in generated.iterdir())
    assert len(names) == 4 * len(protos)
    stale = [n for n in names if not filecmp.cmp(generated / n, committed / n, shallow=False)]
    assert stale == [], f"stubs differ from proto/: {stale}; run `make protos`"
    extra = sorted(
        p.name for p in committed.iterdir()
        if p.suffix in (".py", ".pyi") and p.name != "__init__.py" and p.name not in names
    )  # fmt: skip
    assert extra == [], f"committed stubs without a .proto: {extra}"
    shutil.rmtree(tmp_path / "fedmatch")
