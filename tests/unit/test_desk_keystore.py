"""Passphrase-protected signing keys (fedmatch.pki.keystore) and ``fedmatch desk
protect-key``: real files, real scrypt."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from fedmatch.audit.note import NoteSigner
from fedmatch.cli.main import main
from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.pki.keystore import FORMAT, protect, unlock

PASSPHRASE = "a long enough passphrase"


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate("anna.verifier.de.fedmatch.eu")


def test_a_protected_key_unlocks_to_the_same_key(tmp_path: Path, signer: NoteSigner) -> None:
    path = tmp_path / "anna.key.enc"
    protect(signer, PASSPHRASE, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = json.loads(path.read_text())
    assert set(body) == {"format", "salt", "nonce", "ciphertext"}
    assert body["format"] == FORMAT
    # The key is not in the file in any readable form. The encoded key is the
    # fifth "+"-separated field; its base64 may itself contain "+", so split
    # only four times (splitting on every "+" once left a 1-character tail
    # that the random ciphertext happened to contain).
    text = path.read_text()
    encoded = signer.skey().split("+", 4)[-1]
    assert len(encoded) > 40
    assert encoded not in text
    seed = base64.b64decode(encoded + "=" * (-len(encoded) % 4))[1:]
    assert base64.b64encode(seed).decode().rstrip("=") not in text
    assert seed.hex() not in text
    unlocked = unlock(path, PASSPHRASE)
    assert unlocked.public_key_bytes() == signer.public_key_bytes()
    assert unlocked.name == signer.name
    assert unlocked.sign(b"x") == signer.sign(b"x")


def _tampered(path: Path, field: str) -> None:
    body = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(body[field]))
    raw[0] ^= 1
    body[field] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(body))


@pytest.mark.parametrize("field", ["salt", "nonce", "ciphertext", None])
def test_a_wrong_passphrase_and_a_tampered_file_give_the_same_refusal(
    tmp_path: Path, signer: NoteSigner, field: str | None
) -> None:
    path = tmp_path / "k.enc"
    protect(signer, PASSPHRASE, path)
    passphrase = PASSPHRASE
    if field is None:
        passphrase = PASSPHRASE + "!"
    else:
        _tampered(path, field)
    with pytest.raises(PermissionDenied) as refused:
        unlock(path, passphrase)
    assert str(refused.value) == "the passphrase does not unlock k.enc"
    assert PASSPHRASE not in str(refused.value)


def test_an_existing_file_is_never_overwritten(tmp_path: Path, signer: NoteSigner) -> None:
    path = tmp_path / "k.enc"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="already exists"):
        protect(signer, PASSPHRASE, path)
    assert path.read_text() == "precious"


def test_a_short_passphrase_is_refused(tmp_path: Path, signer: NoteSigner) -> None:
    with pytest.raises(InvalidInput, match="at least 10 characters"):
        protect(signer, "short", tmp_path / "k.enc")
    assert not (tmp_path / "k.enc").exists()


def test_a_loose_mode_or_another_file_is_refused_with_the_path(
    tmp_path: Path, signer: NoteSigner
) -> None:
    path = tmp_path / "k.enc"
    protect(signer, PASSPHRASE, path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by group or other"):
        unlock(path, PASSPHRASE)
    plain = tmp_path / "plain.key"
    signer.save(plain)
    with pytest.raises(ConfigError, match="is not a protected key"):
        unlock(plain, PASSPHRASE)
    with pytest.raises(ConfigError, match="could not be opened"):
        unlock(tmp_path / "missing.enc", PASSPHRASE)


def test_protect_key_command_reads_a_passphrase_file(
    tmp_path: Path, signer: NoteSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "anna.key"
    signer.save(key)
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE + "\n")
    out = tmp_path / "anna.key.enc"
    argv = ["desk", "protect-key", "--key", str(key), "--out", str(out)]
    assert main([*argv, "--passphrase-file", str(secret)]) == 0
    assert unlock(out, PASSPHRASE).public_key_bytes() == signer.public_key_bytes()
    printed = capsys.readouterr().out
    assert signer.name in printed and PASSPHRASE not in printed
    # A second run refuses to overwrite the protected file.
    assert main([*argv, "--passphrase-file", str(secret)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_protect_key_command_asks_twice(
    tmp_path: Path,
    signer: NoteSigner,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = tmp_path / "anna.key"
    signer.save(key)
    answers = iter([PASSPHRASE, PASSPHRASE + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    out = tmp_path / "anna.key.enc"
    assert main(["desk", "protect-key", "--key", str(key), "--out", str(out)]) == 2
    assert "the two passphrases differ" in capsys.readouterr().err
    assert not out.exists()
    answers = iter([PASSPHRASE, PASSPHRASE])
    assert main(["desk", "protect-key", "--key", str(key), "--out", str(out)]) == 0
    assert unlock(out, PASSPHRASE).name == signer.name


@pytest.mark.parametrize("command", [["desk"], ["desk", "protect-key"], ["desk", "serve"]])
def test_desk_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out
