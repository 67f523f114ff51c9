"""The smaller items of issue 19 (item 12): ``--version``, ``fedmatch config check``, the
same ``--image`` option everywhere, exit codes documented, and example configs that ship
safe defaults (sealed storage, no keys in the Kubernetes kustomization)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedmatch import __version__
from fedmatch.cli import common
from fedmatch.cli.config_check import EXIT_FILES_MISSING
from fedmatch.cli.main import build_parser, main
from fedmatch.ops.status import EXIT_UNHEALTHY
from node.config import load_storage_config

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedmatch {__version__}"


_RIGHTS = ["rights", "which-states", "--coordinator", "127.0.0.1:1", "--state", "IT",
           "--legal-basis", "x", "--case-reference", "c", "--unit", "u", "--operator", "o",
           "--candidates-out", "dsr.json", "--config", "operator.toml"]  # fmt: skip


def test_rights_takes_image_like_enroll_and_lookup(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args([*_RIGHTS, "--image", "p.jpg"])
    assert args.image == Path("p.jpg")
    assert "deprecated" not in capsys.readouterr().err


def test_rights_photo_is_a_deprecated_alias(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args([*_RIGHTS, "--photo", "p.jpg"])
    assert args.image == Path("p.jpg")
    assert "--photo is deprecated" in capsys.readouterr().err


def test_every_photo_option_is_named_image() -> None:
    """No command names a single photo otherwise (folders are --photos, --folder)."""
    for path in (ROOT / "fedmatch" / "cli").glob("*.py"):
        for line in path.read_text().splitlines():
            if '"--photo"' in line and ("type=" in line or "add_argument" in line):
                assert '"--image", "--photo"' in line, (path, line)


# -- config check ----------------------------------------------------------------------------


def _check(
    path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code = main(["config", "check", str(path), *extra])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else {})


def _committed_configs() -> dict[Path, str]:
    kinds = {}
    for path in sorted(DEPLOY.rglob("*.toml")):
        name = path.name
        for kind in ("auditor", "coordinator", "operator", "node"):
            if name.startswith(kind):
                kinds[path] = kind
    return kinds


def test_config_check_accepts_every_committed_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configs = _committed_configs()
    assert len(configs) >= 10
    for path, kind in configs.items():
        if "${" in path.read_text():
            continue  # a template that deploy/compose/provision.py renders
        code, report = _check(path, capsys)
        # Keys, certificates and CRLs are made, never committed: only those may be missing.
        assert code in (0, EXIT_FILES_MISSING), path
        # An auditor's [auditor] is checked once its root and CRLs exist.
        assert report["valid"] is (None if kind == "auditor" else True), path
        assert report["kind"] == kind, path


def test_config_check_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "node.toml"
    text = (DEPLOY / "examples" / "node-it.toml").read_text()
    bad.write_text(text.replace("dimension = 128", "dimension = 128\nmax_wrkers = 3"))
    assert main(["config", "check", str(bad)]) == common.EXIT_INPUT
    assert "node.max_wrkers" in capsys.readouterr().err


def test_config_check_refuses_an_unknown_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "coordinator.toml"
    bad.write_text((DEPLOY / "examples" / "coordinator.toml").read_text() + "\n[polcy]\nx = 1\n")
    assert main(["config", "check", str(bad)]) == common.EXIT_INPUT
    assert "[polcy]" in capsys.readouterr().err


def test_config_check_without_a_service_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[logging]\nformat = 'json'\n")
    assert main(["config", "check", str(bad)]) == common.EXIT_INPUT
    assert "--kind" in capsys.readouterr().err


def test_config_check_lists_missing_files_and_passes_when_they_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "operator-de.toml"
    shutil.copy(DEPLOY / "examples" / "operator-de.toml", config)
    code, report = _check(config, capsys)
    assert code == EXIT_FILES_MISSING and report["missing"]
    for entry in report["missing"]:
        target = tmp_path / entry["path"] if not Path(entry["path"]).is_absolute() else Path(
            entry["path"])  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    code, report = _check(config, capsys)
    assert (code, report["missing"]) == (0, [])


# -- documentation and examples --------------------------------------------------------------


def test_exit_codes_are_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Exit codes") :]
    section = section[: section.find("\n#", 1)]
    codes = {v for k, v in vars(common).items() if k.startswith("EXIT_") and isinstance(v, int)}
    codes |= set(common.QUALITY_EXIT.values()) | {EXIT_UNHEALTHY, EXIT_FILES_MISSING}
    documented = {int(m) for m in re.findall(r"^\| (\d+) +\|", section, re.MULTILINE)}
    assert codes <= documented, sorted(codes - documented)


def test_example_node_config_seals_its_register() -> None:
    storage, present = load_storage_config(DEPLOY / "examples" / "node-it.toml")
    assert present and storage.encrypt_templates and storage.key_file is not None
    assert storage.key_file.is_relative_to(DEPLOY / "examples" / "keys")  # never committed
    readme = (DEPLOY / "README.md").read_text()
    assert "fedmatch node storage-key --out deploy/examples/keys/storage-it.key" in readme


def test_kubernetes_kustomization_holds_no_key_material() -> None:
    """Secrets come from files the operator makes (never committed), named in a
    secretGenerator; no key or certificate text sits in a committed manifest."""
    kustomizations = list((DEPLOY / "kubernetes").rglob("kustomization.yaml"))
    assert kustomizations
    for path in kustomizations:
        text = path.read_text()
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, path
        doc = yaml.safe_load(text)
        for generator in doc.get("secretGenerator", []):
            assert not generator.get("literals"), path
    for path in (DEPLOY / "kubernetes").rglob("*.yaml"):
        text = path.read_text()
        assert "PRIVATE KEY" not in text, path
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), path
