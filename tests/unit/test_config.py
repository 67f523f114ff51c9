"""Tests of the node and coordinator configuration loaders (TOML, environment, overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coordinator.config import CoordinatorConfig, NodeEntry, load_coordinator_config
from fedmatch.audit.note import NoteSigner
from fedmatch.audit.party import AuditConfig, load_audit_config
from fedmatch.errors import ConfigError
from node.config import NodeConfig, load_node_config

NODE_TOML = '[node]\nmember_state = "IT"\ndatabase = "it.sqlite"\ndimension = 128\n'

NODE_ENV = [
    "FEDMATCH_NODE_" + key
    for key in (
        "MEMBER_STATE",
        "DATABASE",
        "DIMENSION",
        "MODEL_ID",
        "LISTEN",
        "MAX_WORKERS",
        "HANDLE_TTL_SECONDS",
    )
]
# Real verifier keys: a node entry names the key its cosignatures are checked against.
IT_KEY = NoteSigner.generate("fedmatch/node/IT").vkey()
GR_KEY = NoteSigner.generate("fedmatch/node/GR").vkey()
FR_KEY = NoteSigner.generate("fedmatch/node/FR").vkey()
AUDITOR_KEY = NoteSigner.generate("auditor-1").vkey()
AUDIT_ENV = [
    "FEDMATCH_AUDIT_" + key
    for key in ("DIRECTORY", "SIGNING_KEY", "AUDITORS", "CHECKPOINT_INTERVAL_SECONDS")
] + ["FEDMATCH_AUDIT_COORDINATOR_KEY"]
COORDINATOR_ENV = [
    "FEDMATCH_COORDINATOR_" + key
    for key in (
        "LISTEN",
        "THRESHOLD",
        "THRESHOLD_VERSION",
        "MODEL_ID",
        "DIMENSION",
        "NODE_DEADLINE_SECONDS",
        "LOOKUP_TTL_SECONDS",
        "MAX_WORKERS",
    )
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FEDMATCH_* variable from the developer's shell leaks into these tests."""
    for name in NODE_ENV + COORDINATOR_ENV + AUDIT_ENV:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / "etc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- node


def test_node_config_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        NODE_TOML
        + 'model_id = "m-2"\nlisten = "0.0.0.0:7001"\nmax_workers = 3\n'
        + "handle_ttl_seconds = 90\n",
    )
    cfg = load_node_config(path)
    assert cfg == NodeConfig(
        member_state="IT",
        database=path.parent / "it.sqlite",
        dimension=128,
        model_id="m-2",
        listen="0.0.0.0:7001",
        max_workers=3,
        handle_ttl_seconds=90.0,
    )
    assert isinstance(cfg.handle_ttl_seconds, float)


def test_node_config_defaults(tmp_path: Path) -> None:
    cfg = load_node_config(write(tmp_path, '[node]\nmember_state = "GR"\ndatabase = "g.db"\n'))
    assert (cfg.dimension, cfg.model_id, cfg.listen, cfg.max_workers) == (
        128,
        "sface-2021dec-int8bq",
        "127.0.0.1:0",
        8,
    )
    assert cfg.handle_ttl_seconds == 3600.0


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        pytest.param("it.sqlite", "etc/it.sqlite", id="bare-name"),
        pytest.param("data/it.sqlite", "etc/data/it.sqlite", id="subdirectory"),
        pytest.param("../var/it.sqlite", "etc/../var/it.sqlite", id="parent"),
    ],
)
def test_relative_database_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str, expected: str
) -> None:
    path = write(tmp_path, f'[node]\nmember_state = "IT"\ndatabase = "{database}"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_node_config(path)
    assert cfg.database == tmp_path / expected
    assert cfg.database.is_absolute()


def test_absolute_database_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "it.sqlite"
    path = write(tmp_path, f'[node]\nmember_state = "IT"\ndatabase = "{target}"\n')
    assert load_node_config(path).database == target


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, NODE_TOML + 'listen = "127.0.0.1:7000"\n')
    monkeypatch.setenv("FEDMATCH_NODE_DIMENSION", "256")
    monkeypatch.setenv("FEDMATCH_NODE_LISTEN", "0.0.0.0:9000")
    monkeypatch.setenv("FEDMATCH_NODE_MEMBER_STATE", "FR")
    monkeypatch.setenv("FEDMATCH_NODE_HANDLE_TTL_SECONDS", "12.5")
    cfg = load_node_config(path)
    assert cfg.dimension == 256
    assert cfg.listen == "0.0.0.0:9000"
    assert cfg.member_state == "FR"
    assert cfg.handle_ttl_seconds == 12.5
    assert cfg.database == path.parent / "it.sqlite"  # untouched by the environment


def test_environment_alone_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMATCH_NODE_MEMBER_STATE", "ES")
    monkeypatch.setenv("FEDMATCH_NODE_DATABASE", str(tmp_path / "es.sqlite"))
    cfg = load_node_config(None)
    assert cfg.member_state == "ES"
    assert cfg.database == tmp_path / "es.sqlite"


def test_explicit_overrides_win_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, NODE_TOML + 'listen = "127.0.0.1:7000"\n')
    monkeypatch.setenv("FEDMATCH_NODE_LISTEN", "0.0.0.0:9000")
    monkeypatch.setenv("FEDMATCH_NODE_MAX_WORKERS", "4")
    cfg = load_node_config(path, {"listen": "10.0.0.1:1234", "max_workers": 2})
    assert cfg.listen == "10.0.0.1:1234"
    assert cfg.max_workers == 2


def test_none_override_does_not_hide_lower_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI passes {"listen": None} when --listen is not given.
    path = write(tmp_path, NODE_TOML + 'listen = "127.0.0.1:7000"\n')
    assert load_node_config(path, {"listen": None}).listen == "127.0.0.1:7000"
    monkeypatch.setenv("FEDMATCH_NODE_LISTEN", "0.0.0.0:9000")
    assert load_node_config(path, {"listen": None}).listen == "0.0.0.0:9000"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        pytest.param('colour = "blue"\n', "node.colour", id="unknown-key"),
        pytest.param("Dimension = 5\n", "node.Dimension", id="wrong-case"),
        pytest.param('dimension = "abc"\n', "node.dimension", id="dimension-string"),
        pytest.param("dimension = 1.5\n", "node.dimension", id="dimension-float"),
        pytest.param("max_workers = [1]\n", "node.max_workers", id="max-workers-list"),
        pytest.param('handle_ttl_seconds = "soon"\n', "node.handle_ttl_seconds", id="ttl-string"),
        pytest.param("dimension = 0\n", "node.dimension", id="dimension-zero"),
        pytest.param("dimension = 4097\n", "node.dimension", id="dimension-too-big"),
        pytest.param("max_workers = 0\n", "node.max_workers", id="max-workers-zero"),
    ],
)
def test_bad_node_key_names_the_key(tmp_path: Path, extra: str, key: str) -> None:
    # TOML forbids repeating a key, so the base file leaves out the one under test.
    base = '[node]\nmember_state = "IT"\ndatabase = "it.sqlite"\n'
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_node_config(write(tmp_path, base + extra))


@pytest.mark.parametrize("env_value", ["abc", "1.5", ""], ids=["letters", "float", "empty"])
def test_bad_environment_value_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_value: str
) -> None:
    monkeypatch.setenv("FEDMATCH_NODE_DIMENSION", env_value)
    with pytest.raises(ConfigError, match=r"node\.dimension"):
        load_node_config(write(tmp_path, NODE_TOML))


@pytest.mark.parametrize(
    "state", ["XX", "it", "EL", "ITA", "", "UK"], ids=["XX", "lower", "EL", "ITA", "empty", "UK"]
)
def test_bad_member_state_is_config_error(tmp_path: Path, state: str) -> None:
    path = write(tmp_path, f'[node]\nmember_state = "{state}"\ndatabase = "x.sqlite"\n')
    with pytest.raises(ConfigError, match=r"node\.member_state"):
        load_node_config(path)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[node\nmember_state = 'IT'\n", id="unclosed-table"),
        pytest.param("[node]\nmember_state = IT\n", id="bare-string"),
        pytest.param("node = 5\n", id="node-not-a-table"),
    ],
)
def test_malformed_file_is_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_node_config(write(tmp_path, text))


def test_missing_node_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_node_config(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- coordinator

COORD_TOML = f"""
[coordinator]
threshold = 0.5
threshold_version = "t-1"
dimension = 64
node_deadline_seconds = 5

[[nodes]]
member_state = "IT"
address = "127.0.0.1:5001"
key = "{IT_KEY}"

[[nodes]]
member_state = "GR"
address = "node-gr.example:443"
key = "{GR_KEY}"
"""


def test_coordinator_config_with_nodes(tmp_path: Path) -> None:
    cfg = load_coordinator_config(write(tmp_path, COORD_TOML))
    assert cfg.threshold == 0.5
    assert cfg.threshold_version == "t-1"
    assert cfg.dimension == 64
    assert cfg.node_deadline_seconds == 5.0
    assert cfg.nodes == (
        NodeEntry("IT", "127.0.0.1:5001", IT_KEY),
        NodeEntry("GR", "node-gr.example:443", GR_KEY),
    )
    assert cfg.node("GR") == NodeEntry("GR", "node-gr.example:443", GR_KEY)
    assert cfg.node("FR") is None


def test_coordinator_defaults_without_file() -> None:
    assert load_coordinator_config(None) == CoordinatorConfig()


def test_coordinator_environment_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDMATCH_COORDINATOR_THRESHOLD", "0.6")
    monkeypatch.setenv("FEDMATCH_COORDINATOR_LISTEN", "0.0.0.0:1")
    path = write(tmp_path, COORD_TOML)
    cfg = load_coordinator_config(path, {"listen": "0.0.0.0:2"})
    assert cfg.threshold == 0.6
    assert cfg.listen == "0.0.0.0:2"
    assert len(cfg.nodes) == 2
    override = {"nodes": [{"member_state": "FR", "address": "f:1", "key": FR_KEY}]}
    replaced = load_coordinator_config(path, override)
    assert replaced.nodes == (NodeEntry("FR", "f:1", FR_KEY),)


NODE_IT = f'[[nodes]]\nmember_state = "IT"\naddress = "a:1"\nkey = "{IT_KEY}"\n'

BAD_COORDINATOR: list[Any] = [
    pytest.param(NODE_IT + NODE_IT, "twice", id="duplicate-state"),
    pytest.param(NODE_IT + NODE_IT.replace('"a:1"', '"b:2"'), "twice", id="dup-new-addr"),
    pytest.param(
        f'[[nodes]]\nmember_state = "IT"\nkey = "{IT_KEY}"\n', "exactly", id="missing-address"
    ),
    pytest.param(f'[[nodes]]\naddress = "a:1"\nkey = "{IT_KEY}"\n', "exactly", id="missing-state"),
    # Every node is named with the key its cosignatures are checked against.
    pytest.param(
        '[[nodes]]\nmember_state = "IT"\naddress = "a:1"\n', r"nodes\.key", id="missing-key"
    ),
    pytest.param(NODE_IT.replace(IT_KEY, ""), r"nodes\.key", id="empty-key"),
    pytest.param(NODE_IT.replace(IT_KEY, "not-a-vkey"), r"nodes\.key", id="bad-key"),
    pytest.param(NODE_IT.replace(IT_KEY, IT_KEY[:-4]), r"nodes\.key", id="truncated-key"),
    pytest.param(
        NODE_IT.replace(IT_KEY, NoteSigner.generate("x").vkey()[:-8] + "AAAAAAA="),
        r"nodes\.key",
        id="garbled-key",
    ),
    pytest.param(NODE_IT + "weight = 2\n", "exactly", id="extra-key"),
    pytest.param('nodes = "IT"\n', "array", id="nodes-not-array"),
    pytest.param('nodes = ["IT"]\n', "exactly", id="nodes-of-strings"),
    pytest.param(NODE_IT.replace('"IT"', '"XX"'), "member_state", id="bad-ms"),
    pytest.param(NODE_IT.replace('"a:1"', '"a"'), "host:port", id="bad-addr"),
    pytest.param("[coordinator]\nthreshold = 1.0\n", "threshold", id="threshold-one"),
    pytest.param("[coordinator]\nthreshold = 1.5\n", "threshold", id="threshold-above"),
    pytest.param("[coordinator]\nthreshold = -1.0\n", "threshold", id="threshold-minus-one"),
    # Zero or below would let blank (padding, erased) rows match every probe.
    pytest.param("[coordinator]\nthreshold = 0.0\n", "threshold", id="threshold-zero"),
    pytest.param("[coordinator]\nthreshold = -0.2\n", "threshold", id="threshold-negative"),
    pytest.param("[coordinator]\nthreshold = -7\n", "threshold", id="threshold-below"),
    pytest.param("[coordinator]\nthreshold = nan\n", "threshold", id="threshold-nan"),
    pytest.param('[coordinator]\nthreshold = "high"\n', "threshold", id="threshold-string"),
    pytest.param("[coordinator]\nnode_deadline_seconds = 0\n", "deadline", id="deadline-zero"),
    pytest.param('[coordinator]\ncolour = "red"\n', r"coordinator\.colour", id="unknown-key"),
    pytest.param(
        "[coordinator]\n" + NODE_IT.replace("[[", "[[coordinator."),
        r"coordinator\.nodes",
        id="nodes-inside-coordinator",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_COORDINATOR)
def test_bad_coordinator_config_is_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_coordinator_config(write(tmp_path, text))


def test_threshold_out_of_range_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMATCH_COORDINATOR_THRESHOLD", "2")
    with pytest.raises(ConfigError, match="threshold"):
        load_coordinator_config(None)


def test_missing_coordinator_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_coordinator_config(tmp_path / "nope.toml")


# --- regressions: bugs found in review, now fixed ---


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('[node]\ndatabase = "it.sqlite"\n', id="no-member-state"),
        pytest.param('[node]\nmember_state = "IT"\n', id="no-database"),
        pytest.param("# empty\n", id="no-node-table"),
    ],
)
def test_missing_required_key_is_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_node_config(write(tmp_path, text))


def test_boolean_for_integer_key_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.dimension"):
        load_node_config(write(tmp_path, NODE_TOML.replace("128", "true")))


def test_relative_database_from_environment_is_not_file_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, NODE_TOML)
    monkeypatch.setenv("FEDMATCH_NODE_DATABASE", "from-env.sqlite")
    assert load_node_config(path).database == Path("from-env.sqlite")


@pytest.mark.parametrize(
    ("service", "text"),
    [
        pytest.param("node", NODE_TOML + "handle_ttl_seconds = -5\n", id="node-ttl-negative"),
        pytest.param("coordinator", "[coordinator]\ndimension = 0\n", id="coord-dimension-0"),
        pytest.param("coordinator", "[coordinator]\nmax_workers = 0\n", id="coord-workers-0"),
        pytest.param(
            "coordinator", "[coordinator]\nlookup_ttl_seconds = -1\n", id="coord-ttl-negative"
        ),
    ],
)
def test_unvalidated_values_are_config_errors(tmp_path: Path, service: str, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError):
        if service == "node":
            load_node_config(path)
        else:
            load_coordinator_config(path)


def test_node_entry_needs_a_verifier_key() -> None:
    assert NodeEntry("IT", "a:1", IT_KEY).key == IT_KEY
    with pytest.raises(ConfigError, match=r"nodes\.key for IT"):
        NodeEntry("IT", "a:1")
    with pytest.raises(ConfigError, match=r"nodes\.key for IT"):
        NodeEntry("IT", "a:1", "fedmatch/node/IT+00000000+AAAA")


# --------------------------------------------------------------------------- audit

AUDIT_TOML = f"""
[audit]
directory = "audit"
signing_key = "keys/node-it.key"
auditors = ["{AUDITOR_KEY}"]
checkpoint_interval_seconds = 2.5
coordinator_key = "{NoteSigner.generate("fedmatch/coordinator").vkey()}"
"""


def test_audit_config_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, NODE_TOML + AUDIT_TOML)
    cfg = load_audit_config(path)
    assert cfg.directory == path.parent / "audit"
    assert cfg.signing_key == path.parent / "keys" / "node-it.key"
    assert cfg.auditors == (AUDITOR_KEY,)
    assert cfg.checkpoint_interval_seconds == 2.5
    assert cfg.coordinator_key.startswith("fedmatch/coordinator+")
    # The [node] table of the same file still loads on its own.
    assert load_node_config(path).member_state == "IT"


def test_audit_auditors_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = NoteSigner.generate("auditor-2").vkey()
    monkeypatch.setenv("FEDMATCH_AUDIT_AUDITORS", f"{AUDITOR_KEY}, {other}")
    cfg = load_audit_config(write(tmp_path, AUDIT_TOML))
    assert cfg.auditors == (AUDITOR_KEY, other)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("# no [audit]\n", r"audit\.directory", id="no-audit-table"),
        pytest.param('[audit]\ndirectory = "a"\n', r"audit\.signing_key", id="no-signing-key"),
        pytest.param(
            AUDIT_TOML.replace(AUDITOR_KEY, "not-a-vkey"), r"audit\.auditors", id="bad-auditor"
        ),
        pytest.param(
            AUDIT_TOML.replace(f'["{AUDITOR_KEY}"]', f'"{AUDITOR_KEY}"').replace(
                "auditors", "auditor"
            ),
            r"audit\.auditor",
            id="unknown-key",
        ),
        pytest.param(
            AUDIT_TOML.replace("2.5", "0"), "checkpoint_interval_seconds", id="interval-zero"
        ),
        pytest.param(
            AUDIT_TOML.replace('coordinator_key = "fedmatch', 'coordinator_key = "x'),
            r"audit\.coordinator_key",
            id="bad-coordinator-key",
        ),
    ],
)
def test_bad_audit_config_is_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_audit_config(write(tmp_path, text))


def test_audit_config_defaults() -> None:
    cfg = AuditConfig(directory=Path("a"), signing_key=Path("k"))
    assert (cfg.auditors, cfg.coordinator_key) == ((), "")
