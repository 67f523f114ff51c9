"""Every file in deploy/ is parsed and cross-checked: the Dockerfile's stages against the
repository and the CLI, the compose federation against the images, its provisioning step
and the real config loaders, and the Kubernetes manifests against (a subset of) the API
schema, each other, the images, the CLI and the real config loaders, in the file view each
pod would have. No Docker engine and no cluster are needed; ``kubectl kustomize`` (offline)
renders the manifests when kubectl is installed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.config import load_coordinator_config
from fedmatch.audit.auditor import load_auditor_config
from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.audit.party import COORDINATOR_ORIGIN, load_audit_config, node_origin
from fedmatch.cli.common import load_operator
from fedmatch.cli.main import build_parser
from fedmatch.he.sharded import _WORKER_KEY_CAPACITY
from fedmatch.ops.logjson import load_logging_config
from fedmatch.ops.metrics_http import load_metrics_config
from fedmatch.protocol.transport import load_security
from node.config import load_node_config, load_storage_config
from node.policy import load_policy
from node.sealing import KeyEncryptionKey

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
CLOSURE = DEPLOY / "docker" / "runtime_closure.py"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
PROVISION = COMPOSE_DIR / "provision.py"
K8S = DEPLOY / "kubernetes"
ROLES = ("node", "coordinator", "auditor")
# What the containers see: configuration and keys read-only, state in the volume.
ETC, STATE = "/etc/fedmatch", "/var/lib/fedmatch"


# -- the CLI, as every container command is checked against it ----------------------------


def parse_cli(argv: list[str]) -> Any:
    """``argv`` (without the program name) through the real ``fedmatch`` parser."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and "--help" in argv:
            return None
        raise AssertionError(f"fedmatch {shlex.join(argv)} does not parse") from None


def config_of(argv: list[str]) -> str:
    args = parse_cli(argv)
    assert args is not None and isinstance(args.config, Path), argv
    return str(args.config)


# -- Dockerfile ---------------------------------------------------------------------------


@dataclass
class Instruction:
    op: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments
    dropped (as the Docker builder does, also inside a continued instruction)."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "a continued instruction runs off the end of the Dockerfile"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            words = rest.split()
            assert len(words) in (1, 3) and (len(words) == 1 or words[1].upper() == "AS"), line
            stages.append(Stage(words[-1] if len(words) == 3 else "", words[0]))
        elif not stages:
            assert op == "ARG", f"only ARG may precede the first FROM: {line}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(op, rest))
    return args, stages


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage ``name`` and the stages it is built FROM, base first."""
    by_name = {s.name: s for s in stages}
    chain = [by_name[name]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def last(chain: list[Stage], op: str) -> Instruction:
    found = [i for s in chain for i in s.instructions if i.op == op]
    assert found, f"stage {chain[-1].name} has no {op}"
    return found[-1]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str, ignore: Path = DOCKERIGNORE) -> bool:
    """Whether the builder sends ``path`` (relative to the context) with these ignore rules:
    the last matching pattern wins; a pattern matching a directory matches what is in it."""
    rules = []
    for line in ignore.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _glob_regex(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            included = negated
    return included


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def locked_pins() -> dict[str, str]:
    """requirements.lock's pins, name -> version (each followed by its ``--hash`` lines)."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith(("#", " ")):
            name, _, version = line.removesuffix("\\").strip().partition("==")
            pins[name] = version
    return pins


def test_every_pin_of_the_lock_carries_its_hashes() -> None:
    """pip --require-hashes installs the lock (make, the image): each pin lists the SHA-256
    of the files it may install, so a file swapped on an index is refused."""
    text = (ROOT / "requirements.lock").read_text()
    hash_line = r"    --hash=sha256:[0-9a-f]{64}(?: \\)?\n"
    blocks = re.findall(rf"^(\S+==\S+) \\\n((?:{hash_line})+)", text, re.M)
    assert len(blocks) == len(locked_pins()) > 50
    for pin, hashes in blocks:
        assert hashes.rstrip().endswith(tuple("0123456789abcdef")), pin  # the last has no "\\"
    assert "--require-hashes -r requirements.lock" in (ROOT / "Makefile").read_text()


def test_dockerfile_has_a_pinned_base_and_a_locked_no_deps_build() -> None:
    args, stages = dockerfile()
    image = args["PYTHON_IMAGE"]
    # An exact release of the Python the lock was tested with (cp311 wheels), never a
    # floating tag; a digest may be added.
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image)
    assert match is not None, image
    assert (int(match[1]), int(match[2])) == sys.version_info[:2]
    names = [s.name for s in stages]
    for stage in stages:
        assert stage.base == "${PYTHON_IMAGE}" or stage.base in names, stage.base
    build = stage_chain(stages, "build")[-1]
    runs = " ".join(" ".join(i.args.split()) for i in build.instructions if i.op == "RUN")
    assert "--no-deps --only-binary=:all: --require-hashes -r requirements.lock" in runs
    assert "pip wheel --no-deps" in runs
    assert "runtime_closure.py fedmatch --prune --pyproject /src/pyproject.toml" in runs
    runtime = stage_chain(stages, "runtime")
    assert [s.name for s in runtime] == ["runtime"]
    copies = [i.args for i in runtime[0].instructions if i.op == "COPY"]
    assert copies == ["--from=build /opt/fedmatch /opt/fedmatch"]


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    _, stages = dockerfile()
    sources = []
    for stage in stages:
        for ins in stage.instructions:
            if ins.op in ("COPY", "ADD"):
                words = [w for w in ins.args.split() if not w.startswith("--")]
                if "--from=" in ins.args:
                    continue
                sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert in_build_context(source), f"{source} is excluded by {DOCKERIGNORE.name}"
    # And nothing private, generated or unneeded is ever sent to the builder.
    for path in (
        "deploy/examples/keys/node-it.key",
        "deploy/kubernetes/secrets/node-de/tls/key.pem",
        "deploy/compose/provision.py",
        ".venv/bin/python",
        "tests/federation.py",
        "fedmatch/__pycache__/cli.cpython-311.pyc",
        ".git/config",
    ):
        assert not in_build_context(path), path


@pytest.mark.parametrize(
    ("target", "command"),
    [("node", ["node", "serve"]), ("coordinator", ["coordinator", "serve"]),
     ("auditor", ["audit", "watch"])],
)  # fmt: skip
def test_each_role_image_runs_its_command_as_non_root_with_a_health_check(
    target: str, command: list[str]
) -> None:
    _, stages = dockerfile()
    chain = stage_chain(stages, target)
    assert [s.name for s in chain] == ["runtime", target]
    user = last(chain, "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and gid.isdigit() and int(gid) != 0, user
    assert last(chain, "VOLUME").exec_form() == [STATE]
    assert last(chain, "WORKDIR").args == STATE
    entrypoint = last(chain, "ENTRYPOINT").exec_form()
    assert entrypoint == ["fedmatch"]
    argv = last(chain, "CMD").exec_form()
    args = parse_cli(argv)
    assert argv[:2] == command
    config = config_of(argv)
    assert config == f"{ETC}/config/{target}.toml"
    health = last(chain, "HEALTHCHECK").args
    options, _, probe = health.partition(" CMD ")
    assert re.search(r"--interval=\d+[sm]", options) and re.search(r"--timeout=\d+s", options)
    probe_argv = json.loads(probe)
    assert probe_argv[0] == "fedmatch" and probe_argv[1] == "health"
    assert config_of(probe_argv[1:]) == config
    assert args is not None
    ports = [i.args for s in chain for i in s.instructions if i.op == "EXPOSE"]
    assert ports == ({"node": ["50061"], "coordinator": ["50060"]}.get(target, []))


def image_user() -> tuple[int, int]:
    _, stages = dockerfile()
    uid, _, gid = last(stage_chain(stages, "runtime"), "USER").args.partition(":")
    return int(uid), int(gid)


@pytest.mark.parametrize("extras", ["", "ray"])
def test_runtime_closure_is_the_locked_runtime_set(extras: str) -> None:
    """The image keeps exactly fedmatch's runtime closure (with ``FEDMATCH_EXTRAS``), every
    member at the lock's pin: run as the build stage runs it, in a real process, on this
    venv and the project's pyproject.toml."""
    argv = [sys.executable, str(CLOSURE), "fedmatch", "--pyproject", str(ROOT / "pyproject.toml"),
            "--extras", extras]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    kept = dict(line.split("==") for line in out.stdout.split())
    lock = {re.sub(r"[-_.]+", "-", name).lower(): v for name, v in locked_pins().items()}
    assert kept.pop("fedmatch")
    for name, version in kept.items():
        assert lock.get(name) == version, f"{name}=={version} is not what requirements.lock pins"
    for needed in ("grpcio", "grpcio-health-checking", "tenseal", "cryptography", "numpy"):
        assert needed in kept
    assert ("ray" in kept) == (extras == "ray")
    for dev in ("pytest", "mypy", "ruff", "hypothesis", "grpcio-tools", "setuptools"):
        assert dev not in kept, dev
    # Declared by insightface, left out of the lock on purpose (deploy/docker/runtime_closure.py).
    assert out.stderr.strip().splitlines() == [
        "not installed (left out of the lock): opencv-python"
    ]


# -- compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Volume entries in the long form."""
    out = []
    for item in service.get("volumes", []):
        if isinstance(item, dict):
            out.append(item)
            continue
        source, target, *mode = item.split(":")
        kind = "bind" if source.startswith((".", "/")) else "volume"
        out.append({"type": kind, "source": source, "target": target,
                    "read_only": mode == ["ro"]})  # fmt: skip
    return out


def test_compose_services_images_and_mounts_exist() -> None:
    data = compose()
    services: dict[str, Any] = data["services"]
    _, stages = dockerfile()
    targets = {s.name for s in stages}
    images: dict[str, str] = {}
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context == ROOT, name
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE
            assert build["target"] in targets
            # One tag per role image, whichever service builds it.
            assert images.setdefault(svc["image"], build["target"]) == build["target"]
    for name, svc in services.items():
        assert svc["image"] in images, f"{name} runs an image no service builds"
        for mount in _mounts(svc):
            if mount["type"] == "bind":
                assert (COMPOSE_DIR / mount["source"]).exists(), (name, mount["source"])
                assert mount["read_only"], (name, mount)
            else:
                assert mount["source"] in data["volumes"], (name, mount["source"])
    assert set(images.values()) == set(ROLES)


def test_compose_services_are_hardened_and_publish_nothing() -> None:
    data = compose()
    uid, gid = image_user()
    for name, svc in data["services"].items():
        assert svc["user"] == f"{uid}:{gid}", name
        assert svc["read_only"] is True, name
        assert any(t.split(":")[0] == "/tmp" for t in svc["tmpfs"]), name
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]
        assert "ports" not in svc and not svc.get("privileged", False), name
        writable = [m for m in _mounts(svc) if not m.get("read_only")]
        # The only writable mount is the service's own state volume; the one-shot pki service
        # also writes the parties' volume, and a state's desk is shared by its operator and
        # its verifiers.
        desk = f"{STATE}/desk"
        allowed: dict[str, list[list[str]]] = {
            "pki": [[STATE, ETC]], "operator": [[STATE, desk]], "verifier": [[desk]],
        }  # fmt: skip
        targets = [str(m["target"]) for m in writable]
        assert targets in allowed.get(name.split("-")[0], [[STATE], []]), name
    assert data["networks"]["federation"]["internal"] is True


def test_compose_start_order_waits_for_health() -> None:
    services = compose()["services"]
    nodes = sorted(n for n in services if n.startswith("node-"))
    assert nodes == ["node-de", "node-fr", "node-it"]
    for n in nodes:
        assert services[n]["depends_on"] == {"pki": {"condition": "service_completed_successfully"}}
    coordinator_deps = services["coordinator"]["depends_on"]
    assert coordinator_deps == {n: {"condition": "service_healthy"} for n in nodes}
    assert services["auditor"]["depends_on"] == {"coordinator": {"condition": "service_healthy"}}
    for svc in services.values():
        for dep, how in svc.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert services[dep]["healthcheck"]["test"][0] == "CMD"


def _service_argv(svc: dict[str, Any]) -> list[str] | None:
    """The fedmatch arguments a service runs (None: not the fedmatch entrypoint)."""
    entrypoint = svc.get("entrypoint")
    if entrypoint is not None and entrypoint != ["fedmatch"]:
        return None
    if "command" in svc:
        return list(svc["command"])
    _, stages = dockerfile()
    target = {"fedmatch-node:0.1.0": "node", "fedmatch-coordinator:0.1.0": "coordinator",
              "fedmatch-auditor:0.1.0": "auditor"}[svc["image"]]  # fmt: skip
    return last(stage_chain(stages, target), "CMD").exec_form()


def test_compose_commands_and_healthchecks_parse_with_the_cli() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        argv = _service_argv(svc)
        if argv is not None:
            parse_cli(argv)
        check = svc.get("healthcheck", {})
        if check.get("disable"):
            continue
        test = check["test"]
        assert test[:3] == ["CMD", "fedmatch", "health"], name
        assert argv is not None and config_of(test[2:]) == config_of(argv), name
    pki = services["pki"]
    assert pki["entrypoint"] == ["python", "/deploy/provision.py"]
    assert pki["network_mode"] == "none"


@dataclass
class ComposeFederation:
    """What the pki service leaves in the `parties` volume (in ``etc``), with each party's
    container paths mapped to directories of this test (its state in ``data``)."""

    tmp: Path
    etc: Path
    summary: dict[str, dict[str, str]]

    def config(self, party: str) -> Path:
        """The party's rendered config, its container paths rewritten to this test's."""
        role = party.split("-")[0]
        text = (self.etc / party / "config" / f"{role}.toml").read_text()
        text = text.replace(f"{ETC}/", f"{self.etc / party}/")
        text = text.replace(f"{STATE}/", f"{self.tmp / 'data' / party}/")
        path = self.tmp / "view" / f"{party}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def _provision(tmp: Path, extra: tuple[str, ...] = ()) -> ComposeFederation:
    """Run provision.py as the compose pki service does, in a real process."""
    command: list[str] = compose()["services"]["pki"]["command"]
    args = dict(zip(command[::2], command[1::2], strict=True))
    assert args["--ca"].startswith(STATE) and args["--out"] == ETC
    assert args["--templates"] == "/deploy/config"
    etc = tmp / "parties"
    templates = str(COMPOSE_DIR / "config")
    argv = [sys.executable, str(PROVISION), "--ca", str(tmp / "ca"), "--out", str(etc),
            "--states", args["--states"], "--templates", templates, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    summary = json.loads(out.stdout.strip().splitlines()[-1])["parties"]
    return ComposeFederation(tmp, etc, summary)


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> ComposeFederation:
    return _provision(tmp_path_factory.mktemp("compose"))


def _own_identity(config: Path, role: str, state: str | None, signing_key: Path) -> None:
    """The party's [tls] names it (role, member state), the federation root verifies it,
    and the certificate binds the key it signs with."""
    security = load_security(config)
    identity = security.verify_chain(security.chain_pem())
    assert (identity.role, identity.member_state) == (role, state), config
    assert identity.signing_key == NoteSigner.load(signing_key).public_key_bytes()
    assert security.server_credentials() is not None


def test_compose_configs_load_through_the_real_loaders(provisioned: ComposeFederation) -> None:
    services = compose()["services"]
    subpaths = {
        name: m["volume"]["subpath"]
        for name, svc in services.items()
        for m in _mounts(svc)
        if m["type"] == "volume" and "volume" in m
    }
    # Every party directory a service mounts is one that provisioning made, every server
    # party is mounted by its service, and every party has its config template.
    assert set(subpaths.values()) <= set(provisioned.summary)
    servers = {p for p in provisioned.summary if p.split("-")[0] in ROLES}
    assert {subpaths[p] for p in servers} == servers
    templates = {p.stem for p in (COMPOSE_DIR / "config").glob("*.toml")}
    for party in provisioned.summary:
        assert party in templates or party.split("-")[0] in templates, party
        role = party.split("-")[0]
        assert (provisioned.etc / party / "config" / f"{role}.toml").is_file(), party
    coordinator = load_coordinator_config(provisioned.config("coordinator"))
    for n in coordinator.nodes:
        party = f"node-{n.member_state.lower()}"
        node = load_node_config(provisioned.config(party))
        assert node.member_state == n.member_state
        # The coordinator reaches each node by its compose service name and listen port.
        host, _, port = n.address.rpartition(":")
        assert host == party and node.listen == f"0.0.0.0:{port}"
        assert (node.model_id, node.dimension) == (coordinator.model_id, coordinator.dimension)
        assert NoteVerifier.from_vkey(n.key).name == node_origin(n.member_state)
        assert n.key == provisioned.summary[party]["vkey"]
        # Notices go to the coordinator's service at its listen port.
        assert node.coordinator == f"coordinator:{coordinator.listen.rpartition(':')[2]}"
        # search_workers is what the container may use (compose `cpus`).
        assert node.search_workers == services[party]["cpus"]
        audit = load_audit_config(provisioned.config(party))
        assert audit.coordinator_key == provisioned.summary["coordinator"]["vkey"]
        assert audit.auditors == (provisioned.summary["auditor"]["vkey"],)
        assert audit.directory.is_relative_to(provisioned.tmp / "data" / party)
        assert node.database.is_relative_to(provisioned.tmp / "data" / party)
        load_policy(provisioned.config(party))
        storage, present = load_storage_config(provisioned.config(party))
        assert present and storage.key_file is not None
        KeyEncryptionKey.from_file(storage.key_file)  # 0600, 32 bytes: what the node reads
        assert load_metrics_config(provisioned.config(party)).enabled
        _own_identity(provisioned.config(party), "node", n.member_state, audit.signing_key)
    for party in servers:
        # Structured logs for the collector; the loader is the one the CLI uses.
        assert load_logging_config(provisioned.config(party)).format == "json", party
    caudit = load_audit_config(provisioned.config("coordinator"))
    _own_identity(provisioned.config("coordinator"), "coordinator", None, caudit.signing_key)
    auditor = load_auditor_config(provisioned.config("auditor"))
    assert auditor.name == NoteSigner.load(auditor.signing_key).name
    assert auditor.coordinator.address == f"coordinator:{coordinator.listen.rpartition(':')[2]}"
    assert {p.name: p.address for p in auditor.nodes} == {
        n.member_state: n.address for n in coordinator.nodes
    }
    assert 1 <= auditor.witness_quorum <= len(auditor.nodes)
    _own_identity(provisioned.config("auditor"), "auditor", None, auditor.signing_key)
    desks = [p for p in provisioned.summary if p.startswith(("operator-", "verifier-"))]
    assert len(desks) == 3 * 3
    for party in desks:
        role, state = party.split("-")[0], party.rsplit("-", 1)[1].upper()
        config = provisioned.config(party)
        if role == "operator":
            # The workstation's certificate makes the channel; its officer's signs.
            security = load_security(config)
            identity = security.verify_chain(security.chain_pem())
            assert (identity.role, identity.member_state) == (role, state), config
            _, officer = load_operator(config, False, state, signs=True)
            assert officer is not None and officer.officer == "officer-17"
            continue
        key = Path(tomllib.loads(config.read_text())[role]["signing_key"])
        _own_identity(config, role, state, key)


def test_provisioning_keeps_private_files_private_and_rotates_certificates(
    tmp_path: Path,
) -> None:
    first = _provision(tmp_path)
    for party in first.summary:
        for private in ("tls/key.pem", "keys/signing.key"):
            assert (first.etc / party / private).stat().st_mode & 0o777 == 0o600, party
        if party.startswith("operator-"):
            for private in ("keys/officer.key.enc", "keys/officer.pass"):
                assert (first.etc / party / private).stat().st_mode & 0o777 == 0o600, party
    protected = (first.etc / "operator-de" / "keys" / "officer.key.enc").read_bytes()
    # The CAs' keys never reach a party's directory.
    assert not [p for p in first.etc.rglob("*") if p.name.startswith(("root.key", "eu.key"))]
    storage = (first.etc / "node-de" / "keys" / "storage.key").read_bytes()
    again = _provision(tmp_path)
    assert again.summary == first.summary  # reused: same keys, same certificates
    renewed = _provision(tmp_path, ("--renew",))
    for party, before in first.summary.items():
        after = renewed.summary[party]
        assert after["vkey"] == before["vkey"] and after["serial"] != before["serial"]
    # The officer's protected key is kept while it protects the same key.
    assert (first.etc / "operator-de" / "keys" / "officer.key.enc").read_bytes() == protected
    # The storage key is never replaced: the register's templates are encrypted under it.
    assert (first.etc / "node-de" / "keys" / "storage.key").read_bytes() == storage


# -- Kubernetes ---------------------------------------------------------------------------

# The API objects used here, with the fields each type may have (from the Kubernetes API
# reference, v1.32): a typo or a field in the wrong place fails, as the API server's strict
# field validation would. Types: a name below, "str", "int", "bool", "quantity" (int or
# str), "intstr", "map" (str -> str), "any", or [type] for a list.
SCHEMA: dict[str, dict[str, Any]] = {
    "ObjectMeta": {"name": "str", "namespace": "str", "labels": "map", "annotations": "map"},
    "LabelSelector": {"matchLabels": "map", "matchExpressions": "any"},
    "StatefulSetSpec": {
        "serviceName": "str", "replicas": "int", "podManagementPolicy": "str",
        "updateStrategy": "any", "selector": "LabelSelector", "template": "PodTemplateSpec",
        "volumeClaimTemplates": ["PersistentVolumeClaim"],
        "persistentVolumeClaimRetentionPolicy": "any", "minReadySeconds": "int",
        "revisionHistoryLimit": "int",
    },
    "DeploymentSpec": {
        "replicas": "int", "strategy": "any", "selector": "LabelSelector",
        "template": "PodTemplateSpec", "minReadySeconds": "int", "revisionHistoryLimit": "int",
        "progressDeadlineSeconds": "int",
    },
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {
        "automountServiceAccountToken": "bool", "enableServiceLinks": "bool",
        "terminationGracePeriodSeconds": "int", "securityContext": "PodSecurityContext",
        "initContainers": ["Container"], "containers": ["Container"], "volumes": ["Volume"],
        "serviceAccountName": "str", "nodeSelector": "map", "affinity": "any",
        "tolerations": "any", "priorityClassName": "str",
    },
    "PodSecurityContext": {
        "runAsNonRoot": "bool", "runAsUser": "int", "runAsGroup": "int", "fsGroup": "int",
        "fsGroupChangePolicy": "str", "seccompProfile": "SeccompProfile",
        "supplementalGroups": ["int"],
    },
    "SeccompProfile": {"type": "str", "localhostProfile": "str"},
    "Container": {
        "name": "str", "image": "str", "command": ["str"], "args": ["str"],
        "ports": ["ContainerPort"], "env": "any", "securityContext": "SecurityContext",
        "resources": "ResourceRequirements", "startupProbe": "Probe",
        "readinessProbe": "Probe", "livenessProbe": "Probe", "volumeMounts": ["VolumeMount"],
        "workingDir": "str", "imagePullPolicy": "str",
    },
    "ContainerPort": {"name": "str", "containerPort": "int", "protocol": "str"},
    "SecurityContext": {
        "allowPrivilegeEscalation": "bool", "readOnlyRootFilesystem": "bool",
        "privileged": "bool", "capabilities": "Capabilities", "runAsNonRoot": "bool",
        "runAsUser": "int", "runAsGroup": "int", "seccompProfile": "SeccompProfile",
    },
    "Capabilities": {"add": ["str"], "drop": ["str"]},
    "ResourceRequirements": {"requests": "Resources", "limits": "Resources"},
    "Resources": {
        "cpu": "quantity", "memory": "quantity", "ephemeral-storage": "quantity",
        "storage": "quantity",
    },
    "Probe": {
        "exec": "ExecAction", "grpc": "any", "initialDelaySeconds": "int",
        "periodSeconds": "int", "timeoutSeconds": "int", "failureThreshold": "int",
        "successThreshold": "int",
    },
    "ExecAction": {"command": ["str"]},
    "VolumeMount": {"name": "str", "mountPath": "str", "readOnly": "bool", "subPath": "str"},
    "Volume": {
        "name": "str", "configMap": "ConfigMapVolumeSource", "secret": "SecretVolumeSource",
        "emptyDir": "EmptyDirVolumeSource",
        "persistentVolumeClaim": "PersistentVolumeClaimVolumeSource",
    },
    "ConfigMapVolumeSource": {"name": "str", "items": ["KeyToPath"], "defaultMode": "int"},
    "SecretVolumeSource": {"secretName": "str", "items": ["KeyToPath"], "defaultMode": "int"},
    "KeyToPath": {"key": "str", "path": "str", "mode": "int"},
    "EmptyDirVolumeSource": {"medium": "str", "sizeLimit": "quantity"},
    "PersistentVolumeClaimVolumeSource": {"claimName": "str", "readOnly": "bool"},
    "PersistentVolumeClaim": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta",
                              "spec": "PersistentVolumeClaimSpec"},
    "PersistentVolumeClaimSpec": {
        "accessModes": ["str"], "resources": "VolumeResourceRequirements",
        "storageClassName": "str",
    },
    "VolumeResourceRequirements": {"requests": "Resources"},
    "ServiceSpec": {"type": "str", "clusterIP": "str", "selector": "map",
                    "ports": ["ServicePort"]},
    "ServicePort": {"name": "str", "port": "int", "targetPort": "intstr", "protocol": "str"},
    "NetworkPolicySpec": {"podSelector": "LabelSelector", "policyTypes": ["str"],
                          "ingress": ["NetworkPolicyIngressRule"], "egress": "any"},
    "NetworkPolicyIngressRule": {"from": ["NetworkPolicyPeer"], "ports": ["NetworkPolicyPort"]},
    "NetworkPolicyPeer": {"podSelector": "LabelSelector", "namespaceSelector": "LabelSelector",
                          "ipBlock": "any"},
    "NetworkPolicyPort": {"protocol": "str", "port": "intstr", "endPort": "int"},
}  # fmt: skip
KINDS: dict[tuple[str, str], str | None] = {
    ("v1", "Namespace"): None,
    ("v1", "Service"): "ServiceSpec",
    ("v1", "PersistentVolumeClaim"): "PersistentVolumeClaimSpec",
    ("apps/v1", "StatefulSet"): "StatefulSetSpec",
    ("apps/v1", "Deployment"): "DeploymentSpec",
    ("networking.k8s.io/v1", "NetworkPolicy"): "NetworkPolicySpec",
}
REQUIRED = {
    "StatefulSetSpec": ("selector", "template", "serviceName"),
    "DeploymentSpec": ("selector", "template"),
    "PodSpec": ("containers",),
    "Container": ("name", "image"),
    "ContainerPort": ("containerPort",),
    "VolumeMount": ("name", "mountPath"),
    "Volume": ("name",),
    "KeyToPath": ("key", "path"),
    "ServicePort": ("port",),
    "NetworkPolicySpec": ("podSelector",),
    "ExecAction": ("command",),
    "PersistentVolumeClaimSpec": ("accessModes", "resources"),
}
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUANTITY = re.compile(r"\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?")


def check_schema(value: Any, kind: Any, where: str) -> None:
    if isinstance(kind, list):
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            check_schema(item, kind[0], f"{where}[{i}]")
        return
    if kind == "any":
        return
    if kind in ("str", "int", "bool"):
        types = {"str": str, "int": int, "bool": bool}
        assert isinstance(value, types[kind]), f"{where}: expected {kind}, got {value!r}"
        assert kind == "bool" or not isinstance(value, bool), f"{where}: a bool is not {kind}"
        return
    if kind == "quantity":
        assert _QUANTITY.fullmatch(str(value)), f"{where}: {value!r} is not a quantity"
        return
    if kind == "intstr":
        assert isinstance(value, int | str) and not isinstance(value, bool), where
        return
    if kind == "map":
        assert isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ), f"{where}: expected a map of strings (quote numbers and booleans)"
        return
    fields = SCHEMA[kind]
    assert isinstance(value, dict), f"{where}: expected an object ({kind})"
    unknown = set(value) - set(fields)
    assert not unknown, f"{where}: unknown field(s) {sorted(unknown)} in {kind}"
    for name in REQUIRED.get(kind, ()):
        assert name in value, f"{where}: {kind} requires {name}"
    for name, item in value.items():
        check_schema(item, fields[name], f"{where}.{name}")


def kustomization() -> dict[str, Any]:
    data = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for resource in kustomization()["resources"]:
        path = K8S / resource
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            yield path, doc


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path, doc in manifests():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in out, f"{path}: {key} defined twice"
        out[key] = doc
    return out


def generated(kind: str) -> dict[str, dict[str, str]]:
    """Each ConfigMap or Secret generator: {name: {key: file}} (relative to deploy/kubernetes)."""
    out: dict[str, dict[str, str]] = {}
    for gen in kustomization()[f"{kind}Generator"]:
        files = {}
        for spec in gen["files"]:
            key, _, file = spec.rpartition("=")
            files[key or Path(file).name] = file
        out[gen["name"]] = files
    return out


def workloads() -> dict[str, dict[str, Any]]:
    return {
        name: doc for (kind, name), doc in objects().items()
        if kind in ("StatefulSet", "Deployment")
    }  # fmt: skip


def test_every_kustomize_resource_and_generator_file_exists_or_is_made() -> None:
    k = kustomization()
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    listed = {K8S / r for r in k["resources"]}
    on_disk = {p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk, "every manifest in deploy/kubernetes is a kustomize resource"
    for kind in ("configMap", "secret"):
        for files in generated(kind).values():
            for file in files.values():
                # Committed files exist; secrets/ is made by the operator (see the README).
                assert file.startswith("secrets/") or (K8S / file).is_file(), file
    gitignore = (DEPLOY / ".gitignore").read_text().splitlines()
    assert "/kubernetes/secrets/" in gitignore


def test_manifests_follow_the_api_schema() -> None:
    for path, doc in manifests():
        where = f"{path.relative_to(K8S)} {doc.get('kind')}"
        spec_type = KINDS.get((doc.get("apiVersion", ""), doc.get("kind", "")), "missing")
        assert spec_type != "missing", f"{where}: unknown apiVersion/kind pair"
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, where
        check_schema(doc["metadata"], "ObjectMeta", f"{where}.metadata")
        name = doc["metadata"]["name"]
        assert _DNS1123.fullmatch(name) and len(name) <= 63, f"{where}: bad name {name!r}"
        if spec_type is not None:
            check_schema(doc["spec"], spec_type, f"{where}.spec")


def test_the_schema_check_rejects_typos_and_wrong_types() -> None:
    """The checker above fails on what the API server would refuse (or silently drop)."""
    container = {"name": "node", "image": "fedmatch-node:0.1.0"}
    check_schema(container, "Container", "ok")
    bad: list[tuple[dict[str, Any], str]] = [
        ({**container, "securityContext": {"readOnlyRootFileSystem": True}}, "unknown field"),
        ({**container, "ports": [{"name": "grpc"}]}, "requires containerPort"),
        ({**container, "resources": {"limits": {"memory": "8 GB"}}}, "not a quantity"),
        ({**container, "args": ["serve", 1]}, "expected str"),
        ({"image": "fedmatch-node:0.1.0"}, "requires name"),
    ]
    for value, message in bad:
        with pytest.raises(AssertionError, match=message):
            check_schema(value, "Container", "bad")
    with pytest.raises(AssertionError, match="map of strings"):
        check_schema({"name": "x", "annotations": {"prometheus.io/port": 9464}}, "ObjectMeta", "m")


def test_selectors_services_and_network_policies_agree() -> None:
    objs = objects()
    pods = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in workloads().items()}

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    for name, w in workloads().items():
        assert selects(w["spec"]["selector"]["matchLabels"], pods[name]), name
    sts = objs[("StatefulSet", "fedmatch-node")]
    assert ("Service", sts["spec"]["serviceName"]) in objs
    for (kind, name), doc in objs.items():
        if kind == "Service":
            chosen = [w for w, labels in pods.items() if selects(doc["spec"]["selector"], labels)]
            assert len(chosen) == 1, name
            container = workloads()[chosen[0]]["spec"]["template"]["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for port in doc["spec"]["ports"]:
                assert ports[port["targetPort"]] == port["port"], (name, port)
        if kind == "NetworkPolicy":
            chosen = [w for w, labels in pods.items()
                      if selects(doc["spec"]["podSelector"]["matchLabels"], labels)]  # fmt: skip
            assert len(chosen) == 1, name
            container = workloads()[chosen[0]]["spec"]["template"]["spec"]["containers"][0]
            open_ports = {p["containerPort"] for p in container.get("ports", [])}
            for rule in doc["spec"].get("ingress", []):
                for port in rule["ports"]:
                    assert port["port"] in open_ports, (name, port)
    # The node admits on its gRPC port exactly the coordinator's and the auditors' pods.
    node_policy = objs[("NetworkPolicy", "fedmatch-node")]["spec"]["ingress"]
    grpc_rule = next(r for r in node_policy if r["ports"] == [{"protocol": "TCP", "port": 50061}])
    admitted = [w for w, labels in pods.items()
                if any(selects(p["podSelector"]["matchLabels"], labels)
                       for p in grpc_rule["from"] if "podSelector" in p)]  # fmt: skip
    assert sorted(admitted) == ["fedmatch-auditor", "fedmatch-coordinator"]
    # The coordinator admits the auditors and the nodes (their notices) on its gRPC port.
    coordinator_policy = objs[("NetworkPolicy", "fedmatch-coordinator")]["spec"]["ingress"]
    for client in ("fedmatch-auditor", "fedmatch-node"):
        assert any(
            selects(p["podSelector"]["matchLabels"], pods[client])
            for r in coordinator_policy for p in r["from"] if "podSelector" in p
        ), client  # fmt: skip
    assert objs[("NetworkPolicy", "fedmatch-auditor")]["spec"]["ingress"] == []


def _quantity(value: str | int, unit: str) -> float:
    text = str(value)
    if unit == "cpu":
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in scale.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_pods_run_non_root_read_only_with_limits_and_cli_probes() -> None:
    uid, gid = image_user()
    for name, w in workloads().items():
        pod = w["spec"]["template"]["spec"]
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and (ctx["runAsUser"], ctx["runAsGroup"]) == (uid, gid)
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        mounted = set()
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            for unit in ("cpu", "memory"):
                request = _quantity(c["resources"]["requests"][unit], unit)
                assert 0 < request <= _quantity(c["resources"]["limits"][unit], unit), (name, c)
            mounted |= {m["name"] for m in c["volumeMounts"]}
        declared = {v["name"] for v in pod["volumes"]}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        assert mounted == declared | claims, name
        main = pod["containers"][0]
        argv = main["args"]
        config = config_of(argv)
        assert "command" not in main  # the image's entrypoint, fedmatch
        probes = [main[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in main]
        assert probes and "livenessProbe" in main, name
        for probe in probes:
            command = probe["exec"]["command"]
            assert command[:2] == ["fedmatch", "health"] and config_of(command[1:]) == config
        # The writable paths are the state volume, /tmp and /dev/shm, all declared volumes.
        writable = {m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")}
        assert writable <= {STATE, "/tmp", "/dev/shm"} and STATE in writable, name
        for init in pod.get("initContainers", []):
            assert init["command"][0] == "install"  # copies keys 0600; see the manifests


def test_node_resources_match_its_search_workers_and_the_sizing_comment() -> None:
    sts = objects()[("StatefulSet", "fedmatch-node")]
    main = sts["spec"]["template"]["spec"]["containers"][0]
    node = load_node_config(K8S / "node" / "node.toml")
    limits, requests = main["resources"]["limits"], main["resources"]["requests"]
    # A search uses every worker; the workers must be the CPUs the container may use.
    assert (
        node.search_workers == _quantity(limits["cpu"], "cpu") == _quantity(requests["cpu"], "cpu")
    )
    # The arithmetic of the comment, redone: 1M records at 3.9 KB, 36 MB keys per epoch,
    # max_key_epochs live per other member state in the main process and 8 cached by each
    # worker, 500 MB base; /dev/shm carries the rows at start.
    records, workers, states = 1_000_000, node.search_workers, 26
    keys = 36e6 * (node.max_key_epochs * states + _WORKER_KEY_CAPACITY * workers)
    steady = 500e6 + 3.9e3 * records + keys
    peak = steady + records * node.dimension * 4
    assert steady <= _quantity(requests["memory"], "memory")
    assert peak * 1.2 <= _quantity(limits["memory"], "memory")
    shm = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm")
    assert _quantity(shm["emptyDir"]["sizeLimit"], "memory") >= records * node.dimension * 4
    text = (K8S / "node" / "statefulset.yaml").read_text()
    assert "3.9 KB x 1,000,000" in text and "36 MB x 2 x 26" in text and "36 MB x 8 x 4" in text


def test_the_commented_ray_engine_option_is_what_the_node_loader_accepts(tmp_path: Path) -> None:
    """node.toml shows how to search on Ray in commented lines: uncommented, they load."""
    text = (K8S / "node" / "node.toml").read_text()
    lines = re.findall(r"^# ((?:engine|ray_address|ray_workers) = .+)$", text, re.M)
    assert len(lines) == 3
    config = tmp_path / "node.toml"
    config.write_text(
        text.replace("search_workers = 4\n", "search_workers = 4\n" + "\n".join(lines) + "\n")
    )
    node = load_node_config(config)
    assert node.engine == "ray" and node.ray_address.startswith("ray://") and node.ray_workers == 8


def _volume_files(
    volume: dict[str, Any], files: Callable[[str, str], dict[str, bytes]]
) -> dict[str, bytes]:
    """The files a configMap or secret volume shows: its items, or every key."""
    if "configMap" in volume:
        source, name = volume["configMap"], volume["configMap"]["name"]
        data = files("configMap", name)
    else:
        source, name = volume["secret"], volume["secret"]["secretName"]
        data = files("secret", name)
    items = source.get("items")
    if items is None:
        return dict(data)
    out = {}
    for item in items:
        assert item["key"] in data, f"{name} has no key {item['key']}"
        out[item["path"]] = data[item["key"]]
    return out


def materialize_pod(
    workload: dict[str, Any], root: Path, files: Callable[[str, str], dict[str, bytes]]
) -> None:
    """The main container's file view under ``root``: every configMap and secret volume's
    files, the init container's `install -m 0600 -t DIR FILE...` copies, empty volumes."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}

    for init in pod.get("initContainers", []):
        for m in init["volumeMounts"]:
            volume = volumes[m["name"]]
            if "configMap" in volume or "secret" in volume:
                target = root / "init" / m["mountPath"].lstrip("/")
                target.mkdir(parents=True, exist_ok=True)
                for name, data in _volume_files(volume, files).items():
                    (target / name).write_bytes(data)
        command = init["command"]
        assert command[:4] == ["install", "-m", "0600", "-t"]
        target_dir = command[4]
        (root / target_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for source in command[5:]:
            dest = root / target_dir.lstrip("/") / Path(source).name
            dest.write_bytes((root / "init" / source.lstrip("/")).read_bytes())
            dest.chmod(0o600)
    main = pod["containers"][0]
    for m in main["volumeMounts"]:
        volume = volumes.get(m["name"])
        target = root / str(m["mountPath"]).lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if volume is not None and ("configMap" in volume or "secret" in volume):
            for name, data in _volume_files(volume, files).items():
                (target / name).write_bytes(data)


def _in_pod(config: Path, root: Path) -> Path:
    """``config`` with its absolute container paths under ``root``."""
    text = config.read_text().replace('"/', f'"{root}/')
    path = root / "view" / config.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def k8s_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes whose secrets/ holds a real PKI, laid out as the README
    says (made here by provision.py, whose layout is the same)."""
    tmp = tmp_path_factory.mktemp("k8s")
    tree = tmp / "kubernetes"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets"))
    argv = [sys.executable, str(PROVISION), "--ca", str(tmp / "ca"), "--out",
            str(tree / "secrets"), "--states", "DE,IT,FR"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    return tree


def _generator_files(tree: Path) -> Callable[[str, str], dict[str, bytes]]:
    def files(kind: str, name: str) -> dict[str, bytes]:
        spec = generated(kind)[name]
        return {key: (tree / file).read_bytes() for key, file in spec.items()}

    return files


@pytest.mark.parametrize(
    ("workload", "role", "state"),
    [("fedmatch-node", "node", "DE"), ("fedmatch-coordinator", "coordinator", None),
     ("fedmatch-auditor", "auditor", None)],
)  # fmt: skip
def test_each_pod_config_loads_from_what_its_volumes_provide(
    workload: str, role: str, state: str | None, k8s_secrets: Path, tmp_path: Path
) -> None:
    """Build the pod's file view from its ConfigMaps, Secret and init container, then load
    its config through the real loaders: every path it names is there, keys are private,
    and the certificate is the party's own, binding the key it signs with."""
    w = workloads()[workload]
    materialize_pod(w, tmp_path, _generator_files(k8s_secrets))
    main = w["spec"]["template"]["spec"]["containers"][0]
    config = _in_pod(tmp_path / config_of(main["args"]).lstrip("/"), tmp_path)
    security = load_security(config)
    identity = security.verify_chain(security.chain_pem())
    assert (identity.role, identity.member_state) == (role, state)
    assert security.server_credentials() is not None
    assert security.files.key.stat().st_mode & 0o777 == 0o600
    assert load_logging_config(config).format == "json"
    if role == "auditor":
        auditor = load_auditor_config(config)
        assert auditor.state_dir.is_relative_to(tmp_path / STATE.lstrip("/"))
        assert NoteSigner.load(auditor.signing_key).public_key_bytes() == identity.signing_key
        assert {n.name for n in auditor.nodes} == {"DE", "IT", "FR"}
        return
    audit = load_audit_config(config)
    assert NoteSigner.load(audit.signing_key).public_key_bytes() == identity.signing_key
    assert audit.directory.is_relative_to(tmp_path / STATE.lstrip("/"))
    metrics = load_metrics_config(config)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert metrics.listen == f"0.0.0.0:{ports['metrics']}"
    annotations = w["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/scrape"] == "true"
    if role == "node":
        node = load_node_config(config)
        assert node.member_state == state and node.listen == f"0.0.0.0:{ports['grpc']}"
        assert node.database.is_relative_to(tmp_path / STATE.lstrip("/"))
        assert NoteVerifier.from_vkey(audit.coordinator_key).name == COORDINATOR_ORIGIN
        load_policy(config)
        storage, present = load_storage_config(config)
        assert present and storage.key_file is not None
        KeyEncryptionKey.from_file(storage.key_file)
        # Notices go to the coordinator's Service, at its port.
        service = objects()[("Service", "fedmatch-coordinator")]
        host, _, port = node.coordinator.rpartition(":")
        assert host.startswith(f"{service['metadata']['name']}.fedmatch.svc")
        assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
        claims = w["spec"]["volumeClaimTemplates"]
        assert [c["metadata"]["name"] for c in claims] == ["data"]
    else:
        coordinator = load_coordinator_config(config)
        assert coordinator.listen == f"0.0.0.0:{ports['grpc']}"
        node = load_node_config(K8S / "node" / "node.toml")
        de = coordinator.node("DE")
        assert de is not None and de.address.startswith("fedmatch-node.fedmatch.svc")
        assert de.address.endswith(node.listen.rpartition(":")[2])


def test_kustomize_renders_the_manifests_with_generated_names(k8s_secrets: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` (offline) not run")
    out = subprocess.run(
        [kubectl, "kustomize", str(k8s_secrets)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    hashed = {}
    for kind, names in (("ConfigMap", generated("configMap")), ("Secret", generated("secret"))):
        for name, files in names.items():
            match = [
                n for k, n in rendered if k == kind and re.fullmatch(rf"{name}(-[a-z0-9]+)?", n)
            ]
            assert len(match) == 1, name
            hashed[name] = match[0]
            doc = next(d for d in docs if d["metadata"]["name"] == match[0])
            data = doc.get("data", {})
            assert set(data) == set(files), name
            if kind == "Secret":
                assert base64.b64decode(data["key.pem"]).startswith(b"-----BEGIN")
    assert hashed["fedmatch-crls"] == "fedmatch-crls"  # updated in place, never renamed
    assert {k for k in objects()} <= rendered
    for d in docs:
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == "fedmatch"
        if d["kind"] in ("StatefulSet", "Deployment"):
            for v in d["spec"]["template"]["spec"]["volumes"]:
                ref = v.get("configMap", {}).get("name") or v.get("secret", {}).get("secretName")
                assert ref is None or ref in hashed.values(), (d["metadata"]["name"], ref)


# -- every file of deploy/ is covered -------------------------------------------------------

CHECKED = {
    "README.md": "test_deploy_readme_commands_parse (and test_deploy_examples.py)",
    ".gitignore": "test_every_kustomize_resource_and_generator_file_exists_or_is_made",
    "docker/Dockerfile": "the Dockerfile tests",
    "docker/Dockerfile.dockerignore": "test_every_copy_source_exists_and_is_in_the_build_context",
    "docker/runtime_closure.py": "test_runtime_closure_is_the_locked_runtime_set",
    "compose/compose.yaml": "the compose tests",
    "compose/provision.py": "test_provisioning_keeps_private_files_private_and_rotates...",
    "compose/probes/README.md": "test_compose_services_images_and_mounts_exist (bind mount)",
    "kubernetes/kustomization.yaml": "test_kustomize_renders_the_manifests_with_generated_names",
    "monitoring/fedmatch-alerts.yaml": "test_monitoring.py (metrics exported)",
    "monitoring/fedmatch-dashboard.json": "test_monitoring.py (metrics exported)",
}


def test_every_deploy_file_is_checked() -> None:
    """A file added to deploy/ without a test that reads it fails here."""
    on_disk = set()
    for path in DEPLOY.rglob("*"):
        rel = path.relative_to(DEPLOY).as_posix()
        ignored = ("examples/keys/", "examples/tls/", "examples/ca/", "examples/audit-",
                   "kubernetes/secrets/", "__pycache__")  # fmt: skip
        if (
            path.is_file()
            and not any(part in rel for part in ignored)
            and not rel.endswith((".sqlite", ".sqlite-wal", ".sqlite-shm"))
        ):
            on_disk.add(rel)
    covered = set(CHECKED)
    covered |= {f"examples/{p.name}" for p in (DEPLOY / "examples").glob("*.toml")}  # examples test
    covered |= {f"compose/config/{p.name}" for p in (COMPOSE_DIR / "config").glob("*.toml")}
    covered |= {f"kubernetes/{r}" for r in kustomization()["resources"]}
    for kind in ("configMap", "secret"):
        covered |= {f"kubernetes/{f}" for files in generated(kind).values()
                    for f in files.values() if not f.startswith("secrets/")}  # fmt: skip
    assert on_disk == covered, (sorted(on_disk - covered), sorted(covered - on_disk))


def _command_lines(text: str) -> list[list[str]]:
    """The indented command lines of a Markdown text (continuations joined), as argv."""
    out, current = [], ""
    for line in text.splitlines():
        if not line.startswith("    ") and not current:
            continue
        current += line.strip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.startswith(("fedmatch ", "docker ", "kubectl ", "cd ")):
            for part in current.split(" && "):
                out.append(shlex.split(part.split(" > ")[0], comments=True))
        current = ""
    return out


def _provision_parser() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_provision", PROVISION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def check_operator_command(argv: list[str]) -> str:
    """Check one documented command against what it runs: fedmatch's parser, the compose
    services, provision.py's parser, the Dockerfile's targets. Returns what was checked."""
    services = compose()["services"]
    if argv[0] == "fedmatch":
        parse_cli(argv[1:])
        return "fedmatch"
    if argv[0] == "cd":
        assert (ROOT / argv[1]).is_dir() or (DEPLOY / argv[1]).is_dir(), argv
        return "cd"
    if argv[:2] == ["docker", "build"]:
        _, stages = dockerfile()
        assert (ROOT / argv[argv.index("-f") + 1]).resolve() == DOCKERFILE
        assert argv[argv.index("--target") + 1] in {s.name for s in stages}
        return "docker build"
    if argv[:3] == ["docker", "compose", "run"]:
        rest, entrypoint = argv[3:], None
        while rest[0].startswith("--"):
            if rest[0] == "--entrypoint":
                entrypoint, rest = rest[1], rest[2:]
            else:
                rest = rest[1:]
        service, args = rest[0], rest[1:]
        assert service in services, service
        args = args or list(services[service].get("command", []))  # none: the service's own
        if entrypoint is None and "entrypoint" in services[service]:
            assert service == "pki"
            _provision_parser().parse_args(args)
        elif entrypoint in (None, "fedmatch"):
            parse_cli(args)
        return "docker compose run"
    if argv[:3] == ["docker", "compose", "exec"]:
        assert argv[3] in services and argv[4] == "fedmatch", argv
        parse_cli(argv[5:])
        return "docker compose exec"
    if argv[:2] == ["docker", "compose"]:
        for word in argv[2:]:
            service = word.split(":")[0]
            assert (
                service in services
                or word in ("build", "up", "ps", "stop", "cp")
                or word.startswith(("-", "./"))
            ), argv
        return "docker compose"
    if argv[0] == "kubectl":
        if "--" in argv:
            command = argv[argv.index("--") + 1 :]
            assert command[0] == "fedmatch"
            parse_cli(command[1:])
        if "-k" in argv:
            assert (ROOT / argv[argv.index("-k") + 1] / "kustomization.yaml").is_file()
        return "kubectl"
    raise AssertionError(f"an unchecked command in the docs: {shlex.join(argv)}")


def test_deploy_readme_commands_parse() -> None:
    """Every command the deployment README and the README's "Run a federation" section tell
    an operator to run is checked against what it runs (the real CLI parser, the compose
    services, provision.py, the Dockerfile), and every deploy/ path they name exists."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Run a federation")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end > 0 else None]
    texts = [(DEPLOY / "README.md").read_text(), section]
    kinds = [check_operator_command(argv) for text in texts for argv in _command_lines(text)]
    assert kinds.count("fedmatch") >= 20 and {"docker compose run", "kubectl"} <= set(kinds)
    for text in texts:
        for path in re.findall(r"(?<![\w/])deploy/[\w./-]+[\w]", text):
            made = ("/keys/", "/tls/", "/ca/", "/secrets/", "/audit-")
            if not any(s in path + "/" for s in made):
                assert (ROOT / path).exists(), path


# -- the compose federation's configs, run --------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_compose_federation_runs_from_its_rendered_configs(tmp_path: Path) -> None:
    """Real processes from the files the pki service renders, with each service's own
    command and health check (only the compose network's names and ports are mapped to
    loopback): three nodes and the coordinator start over mutual TLS and report SERVING,
    and the auditor's first `audit watch` run verifies every log and the witnesses
    (7 to 35 s here, with the load)."""
    fed = _provision(tmp_path)
    services = compose()["services"]
    ports = {name: _free_port() for name in ("node-de", "node-it", "node-fr", "coordinator")}
    metrics = {name: _free_port() for name in ports}
    for party in (*ports, "auditor"):
        config = fed.config(party)
        text = config.read_text()
        for name, port in ports.items():
            wildcard = "0.0.0.0:50060" if name == "coordinator" else "0.0.0.0:50061"
            if party == name:
                text = text.replace(f'"{wildcard}"', f'"127.0.0.1:{port}"')
            text = text.replace(f'"{name}:{wildcard.rsplit(":", 1)[1]}"', f'"127.0.0.1:{port}"')
        if party in metrics:
            text = text.replace('"0.0.0.0:9464"', f'"127.0.0.1:{metrics[party]}"')
        assert "0.0.0.0" not in text and "node-de:" not in text and "coordinator:" not in text
        config.write_text(text)
    # One search worker each (this machine is shared), witnesses asked every second.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FEDMATCH_NODE_SEARCH_WORKERS": "1",
           "FEDMATCH_COORDINATOR_WITNESS_INTERVAL_SECONDS": "1"}  # fmt: skip

    def argv_of(name: str, command: list[str]) -> list[str]:
        config = config_of(command)
        mapped = str(fed.tmp / "view" / f"{name}.toml")
        return [sys.executable, "-m", "fedmatch", *(mapped if c == config else c for c in command)]

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("node-de", "node-it", "node-fr", "coordinator"):
            command = _service_argv(services[name])
            assert command is not None
            log = (tmp_path / f"{name}.log").open("wb")
            procs.append(subprocess.Popen(argv_of(name, command), env=env, stdout=log, stderr=log))
            probe = argv_of(name, services[name]["healthcheck"]["test"][2:])
            for _ in range(120):
                done = subprocess.run(probe, env=env, capture_output=True, text=True)
                if done.returncode == 0:
                    break
                assert procs[-1].poll() is None, (tmp_path / f"{name}.log").read_text()[-2000:]
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["status"] == "SERVING"
        watch = _service_argv(services["auditor"])
        assert watch is not None and watch[:2] == ["audit", "watch"]
        audit = subprocess.run(
            [*argv_of("auditor", watch), "--runs", "1"], env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
        summary = json.loads(audit.stdout.strip().splitlines()[-1])
        assert summary["ok"] and all(p["verified"] for p in summary["parties"].values())
        assert len(summary["parties"]["fedmatch/coordinator"]["witnesses"]) >= 2
        probe = argv_of("auditor", services["auditor"]["healthcheck"]["test"][2:])
        health = subprocess.run(probe, env=env, capture_output=True, text=True)
        assert health.returncode == 0 and json.loads(health.stdout)["status"] == "WATCHING"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    # Each party stopped cleanly on SIGTERM, as `docker compose stop` asks.
    assert [p.returncode for p in procs] == [0, 0, 0, 0]


@pytest.mark.slow
def test_node_pod_starts_from_its_volumes_and_passes_its_probes(
    k8s_secrets: Path, tmp_path: Path
) -> None:
    """The node pod's file view (ConfigMaps, Secret, the init container's 0600 copies) runs
    the container's own args, and its startup, readiness and liveness probe commands report
    SERVING (only the listen addresses are mapped to free loopback ports). 5 to 15 s."""
    w = workloads()["fedmatch-node"]
    materialize_pod(w, tmp_path, _generator_files(k8s_secrets))
    main = w["spec"]["template"]["spec"]["containers"][0]
    container_config = config_of(main["args"])
    config = _in_pod(tmp_path / container_config.lstrip("/"), tmp_path)
    grpc_port, metrics_port = _free_port(), _free_port()
    text = config.read_text().replace('"0.0.0.0:50061"', f'"127.0.0.1:{grpc_port}"')
    config.write_text(text.replace('"0.0.0.0:9464"', f'"127.0.0.1:{metrics_port}"'))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FEDMATCH_NODE_SEARCH_WORKERS": "1"}

    def argv_of(args: list[str]) -> list[str]:
        mapped = [str(config) if a == container_config else a for a in args]
        return [sys.executable, "-m", "fedmatch", *mapped]

    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(argv_of(main["args"]), env=env, stdout=log, stderr=log)
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = main[probe]["exec"]["command"]
            assert command[0] == "fedmatch"
            for _ in range(120):
                done = subprocess.run(argv_of(command[1:]), env=env, capture_output=True, text=True)
                if done.returncode == 0 or probe != "startupProbe":
                    break
                assert proc.poll() is None, (tmp_path / "node.log").read_text()[-2000:]
            assert done.returncode == 0, (probe, done.stderr)
            reply = json.loads(done.stdout)
            assert reply["status"] == "SERVING" and reply["server_name"] == "node.de.fedmatch.eu"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
