"""The officer at a workstation: the person whose own key signs every request they make.

An operator workstation's certificate (role ``operator``) makes the mutual-TLS channel and
signs nothing. The officer holds a personal certificate (role ``officer``, instance = their
id: ``maria.officer.it.fedmatch.eu``) binding their Ed25519 key, which rests protected by
a passphrase (:mod:`fedmatch.pki.keystore`). The coordinator and every node refuse a request
that an officer of the requesting state did not sign, or whose operator id is not the
signer's (:func:`fedmatch.protocol.statement.verify_request`).

An operator workstation's TOML names the officer beside its ``[tls]``::

    [officer]
    chain = "tls/officer-maria-it/cert.pem"   # their certificate (leaf first), `pki issue`
    key = "keys/officer-maria-it.key.enc"     # `fedmatch desk protect-key` of its bound key
    key_passphrase_env = "FEDMATCH_OFFICER_PASSPHRASE"   # or key_passphrase_file (0600)

The passphrase comes from an environment variable or a file, never from the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmatch.audit.note import NoteSigner
from fedmatch.errors import ConfigError, FedmatchError, PermissionDenied
from fedmatch.fileio import read_file
from fedmatch.pki import keystore
from fedmatch.pki.passphrase import read_passphrase
from fedmatch.protocol.statement import RequestSigner

__all__ = [
    "OFFICER_KEYS",
    "OfficerFiles",
    "check_operator_table",
    "load_officer",
    "officer_files",
    "officer_signer",
]

# The keys of an operator TOML's [officer] table.
OFFICER_KEYS = frozenset({"chain", "key", "key_passphrase_env", "key_passphrase_file"})


def officer_signer(
    key: NoteSigner, chain_pem: bytes, verify_chain: Callable[[bytes], Any], state: str
) -> RequestSigner:
    """The signer of an officer of ``state``: ``chain_pem`` must verify (federation root,
    CRLs: a revoked officer is refused), name an officer of ``state`` and bind ``key``.
    Raises PermissionDenied naming what is wrong."""
    try:
        identity = verify_chain(chain_pem)
    except FedmatchError as exc:
        raise PermissionDenied(f"the officer certificate is refused: {exc}") from None
    if identity.role != "officer" or identity.member_state != state:
        raise PermissionDenied(f"the certificate names {identity.dns}, not an officer of {state}")
    if identity.signing_key != key.public_key_bytes():
        raise PermissionDenied(f"the officer certificate {identity.dns} binds another key")
    return RequestSigner(key, chain_pem)


@dataclass(frozen=True)
class OfficerFiles:
    """What an operator TOML's ``[officer]`` names (paths resolved against the file)."""

    chain: Path
    key: Path
    passphrase_env: str | None
    passphrase_file: Path | None


def _path(base: Path, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"officer.{key} must be a file's path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def check_operator_table(doc: dict[str, Any]) -> None:
    """The operator TOML's ``[operator]`` table, which names nothing any more: a file
    that still names the workstation's ``signing_key`` is refused with what to do."""
    table = doc.get("operator", {})
    if not isinstance(table, dict):
        raise ConfigError("[operator] must be a table")
    if "signing_key" in table:
        raise ConfigError(
            "operator.signing_key: the workstation's key signs no request; the officer's own "
            "key does: give [officer] chain, key and key_passphrase_env or "
            "key_passphrase_file (deploy/README.md)"
        )
    if table:
        raise ConfigError(f"operator.{sorted(table)[0]}: unknown key")


def officer_files(path: Path, table: object) -> OfficerFiles:
    """The ``[officer]`` table of the operator TOML ``path`` (relative paths are relative
    to it), checked without reading any file; ConfigError naming the key."""
    if not isinstance(table, dict):
        raise ConfigError(
            "[officer] is required: the officer's certificate (chain), protected key (key) "
            "and its passphrase's source (key_passphrase_env or key_passphrase_file)"
        )
    unknown = set(table) - OFFICER_KEYS
    if unknown:
        raise ConfigError(f"officer.{sorted(unknown)[0]}: unknown key")
    for key in ("chain", "key"):
        if key not in table:
            raise ConfigError(f"officer.{key} is required")
    env = table.get("key_passphrase_env")
    if env is not None and (not isinstance(env, str) or not env):
        raise ConfigError("officer.key_passphrase_env must name an environment variable")
    file = table.get("key_passphrase_file")
    if env is None and file is None:
        raise ConfigError(
            "officer.key_passphrase_env or officer.key_passphrase_file is required (the "
            "passphrase of the officer's protected key; never on the command line)"
        )
    base = path.parent
    return OfficerFiles(
        _path(base, table["chain"], "chain"),
        _path(base, table["key"], "key"),
        env,
        _path(base, file, "key_passphrase_file") if file is not None else None,
    )


def load_officer(
    path: Path, table: object, verify_chain: Callable[[bytes], Any], state: str
) -> RequestSigner:
    """The officer of the operator TOML ``path``'s ``[officer]`` table: their certificate,
    their protected key unlocked with the passphrase from its source, checked as every
    party will (ConfigError for a missing or wrong file or value, PermissionDenied for a
    passphrase that does not unlock the key or a certificate that is refused)."""
    files = officer_files(path, table)
    passphrase = read_passphrase(files.passphrase_env, files.passphrase_file)
    assert passphrase is not None  # officer_files requires a source
    try:
        text = passphrase.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the officer key's passphrase is not UTF-8 text") from None
    key = keystore.unlock(files.key, text)
    return officer_signer(key, read_file(files.chain), verify_chain, state)
