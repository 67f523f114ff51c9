"""``desk.toml`` (fedmatch.desk.config): a complete file, overrides, and a clear error
naming the key for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmatch.desk.config import load_config, parse_listen
from fedmatch.errors import ConfigError
from tests.desk_case import OFFICER, STATE, DeskWorld, build, verifier_name


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DeskWorld:
    return build(tmp_path_factory.mktemp("desk"), officer=True)


def test_a_complete_file(world: DeskWorld) -> None:
    config = load_config(world.config_path)
    assert config.cases == world.cases
    assert parse_listen(config.listen) == ("127.0.0.1", 0)
    assert config.idle_minutes == 15
    assert config.tls is None
    assert config.root is not None and len(config.crls) == 4  # root, eu, de, it
    assert [v.name for v in config.verifiers] == [verifier_name("anna"), verifier_name("ben")]
    assert [v.person for v in config.verifiers] == ["anna", "ben"]
    assert {v.member_state for v in config.verifiers} == {STATE}
    # A relative key path is relative to the file.
    assert config.verifiers[0].key == world.root / "keys" / "anna.key.enc"
    assert config.officer is not None and config.officer.name == OFFICER
    assert config.officer.operator == world.root / "operator.toml"


def test_environment_and_overrides(world: DeskWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMATCH_DESK_IDLE_MINUTES", "5")
    config = load_config(world.config_path, {"listen": "127.0.0.1:9443"})
    assert config.idle_minutes == 5 and config.listen == "127.0.0.1:9443"


def _variant(world: DeskWorld, tmp_path: Path, old: str, new: str) -> Path:
    text = world.config_path.read_text()
    assert old in text
    path = world.root / f"variant-{tmp_path.name}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[desk]\n", "[desk]\nport = 3\n", r"desk\.port: unknown key"),
        ("[desk]\n", "[desks]\n[desk]\n", r"\[desks\]: unknown table"),
        ('listen = "127.0.0.1:0"', 'listen = "localhost"', "desk.listen must be host:port"),
        ("idle_minutes = 15", "idle_minutes = 0", "desk.idle_minutes must be between"),
        ("idle_minutes = 15", 'idle_minutes = "soon"', "desk.idle_minutes: expected int"),
        ("[desk]\n", '[desk]\ntls_cert = "desk.toml"\n', "tls_cert and desk.tls_key go together"),
        ("cases = ", 'cases = "nowhere"\n#', r"desk\.cases: .*nowhere is not a folder"),
        ('key = "keys/anna.key.enc"', 'key = "keys/lost.enc"', r"verifier\[0\]\.key: .*lost"),
        ('key = "keys/anna.key.enc"', "", r"verifier\[0\]\.key is required"),
        ('coordinator = "127.0.0.1:1"', "", r"officer\.coordinator is required"),
        # The official's id is their certificate's, never free text.
        (
            'unit = "dublin-unit-1"',
            'name = "officer-99"\nunit = "dublin-unit-1"',
            r"officer\.name: the official's id is their officer certificate's",
        ),
    ],
)
def test_a_mistake_names_its_key(
    world: DeskWorld, tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_variant(world, tmp_path, old, new))


def test_the_officer_entry_needs_an_officer_certificate(world: DeskWorld, tmp_path: Path) -> None:
    """Issue 19 item 8: the official signs with their own certificate's key; the
    workstation's certificate (an operator's) cannot stand in for it."""
    official = world.parties[f"officer-{OFFICER}-{STATE}"].tls.chain
    operator = world.parties[f"operator-{STATE}"].tls.chain
    path = _variant(world, tmp_path, f'chain = "{official}"', f'chain = "{operator}"')
    with pytest.raises(ConfigError, match=r"officer\.chain names .*operator.*not a officer"):
        load_config(path)


def test_a_verifier_entry_needs_a_verifier_certificate(world: DeskWorld, tmp_path: Path) -> None:
    operator = world.parties[f"operator-{STATE}"].tls.chain
    anna = world.parties[f"verifier-anna-{STATE}"].tls.chain
    path = _variant(world, tmp_path, f'chain = "{anna}"', f'chain = "{operator}"')
    with pytest.raises(ConfigError, match=r"verifier\[0\]\.chain names .*operator.*not a verifier"):
        load_config(path)
    twice = _variant(
        world,
        tmp_path,
        f'chain = "{world.parties[f"verifier-ben-{STATE}"].tls.chain}"',
        f'chain = "{anna}"',
    )
    with pytest.raises(ConfigError, match="the same certificate name"):
        load_config(twice)
    notpem = _variant(world, tmp_path, f'chain = "{anna}"', f'chain = "{world.config_path}"')
    with pytest.raises(ConfigError, match="does not hold a federation certificate"):
        load_config(notpem)


def test_a_desk_of_nobody_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cases").mkdir()
    path = tmp_path / "desk.toml"
    path.write_text('[desk]\ncases = "cases"\n')
    with pytest.raises(ConfigError, match="names nobody"):
        load_config(path)
    path.write_text("[desk]\n")
    with pytest.raises(ConfigError, match=r"desk\.cases is required"):
        load_config(path)
