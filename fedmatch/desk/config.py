"""The desk's ``desk.toml``: where the cases are, how it listens, who may log in.

::

    [desk]
    cases = "cases"                  # the folder of `fedmatch lookup --candidates-out` files
    listen = "127.0.0.1:8443"        # host:port; port 0 picks a free one
    idle_minutes = 15                # a session idle this long is closed (its key dropped)
    tls_cert = "tls/desk.pem"        # optional, with tls_key: serve HTTPS
    tls_key = "tls/desk.key"
    root = "tls/ca.pem"              # optional, with crls: verify each certificate at login
    crls = ["ca/root.crl", "ca/eu.crl", "ca/de.crl"]

    [[verifier]]                     # one per person who compares images
    chain = "tls/verifier-anna-de/cert.pem"   # their `verifier` certificate (PEM, leaf first)
    key = "keys/verifier-anna-de.key.enc"     # `fedmatch desk protect-key` of its bound key

    [officer]                        # optional: the official who resolves and confirms
    chain = "tls/officer-17-de/cert.pem"   # their `officer` certificate (PEM, leaf first):
                                     # its instance (officer-17) is the id every party logs
    key = "keys/officer-17-de.key.enc"     # `fedmatch desk protect-key` of its bound key
    unit = "dublin-unit-1"
    operator = "operator-de.toml"    # the operator workstation file: its [tls] (the channel)
    coordinator = "coordinator:50060"

Relative paths are relative to the file. ``FEDMATCH_DESK_<KEY>`` overrides a key of
``[desk]``. Every certificate is read here, at start: a wrong file fails before anyone logs
in, naming the key. Keys stay encrypted until their holder logs in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from fedmatch.config import load_section, read_toml
from fedmatch.errors import ConfigError, FedmatchError
from fedmatch.pki.names import Identity, identity_from_certificate

__all__ = [
    "DeskConfig",
    "OfficerConfig",
    "VerifierEntry",
    "load_config",
    "parse_listen",
]


def parse_listen(value: str, key: str = "desk.listen") -> tuple[str, int]:
    """``host:port`` (``[::1]:8443`` for IPv6) as (host, port)."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key} must be host:port, e.g. 127.0.0.1:8443")
    return host, int(port_text)


@dataclass(frozen=True)
class VerifierEntry:
    """One person who verifies hits: their certificate chain and protected key."""

    name: str  # the certificate's DNS name (anna.verifier.de.fedmatch.eu)
    person: str  # its instance (anna), what the login page shows
    member_state: str
    chain: Path
    key: Path

    def chain_pem(self) -> bytes:
        return self.chain.read_bytes()


@dataclass(frozen=True)
class OfficerConfig:
    """The official: who they are (``name``, the instance of their ``officer`` certificate
    ``chain``), their protected key that signs their requests (``key``), their unit, where
    the coordinator is and the workstation file whose ``[tls]`` makes the mTLS channel
    (``operator``)."""

    name: str
    unit: str
    operator: Path
    coordinator: str
    key: Path
    chain: Path
    member_state: str

    def chain_pem(self) -> bytes:
        return self.chain.read_bytes()


@dataclass(frozen=True)
class DeskConfig:
    cases: Path
    listen: str = "127.0.0.1:8443"
    idle_minutes: int = 15
    tls_cert: Path | None = None
    tls_key: Path | None = None
    root: Path | None = None
    crls: tuple[Path, ...] = ()
    verifiers: tuple[VerifierEntry, ...] = ()
    officer: OfficerConfig | None = None

    def __post_init__(self) -> None:
        parse_listen(self.listen)
        if not 1 <= self.idle_minutes <= 24 * 60:
            raise ConfigError("desk.idle_minutes must be between 1 and 1440")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("desk.tls_cert and desk.tls_key go together")
        if self.crls and self.root is None:
            raise ConfigError("desk.crls needs desk.root (the federation root bundle)")
        names = [v.name for v in self.verifiers]
        if len(set(names)) != len(names):
            raise ConfigError("two [[verifier]] entries hold the same certificate name")

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """(certificate, key) of the HTTPS listener, or None for plain HTTP."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return self.tls_cert, self.tls_key


@dataclass(frozen=True)
class _DeskTable:
    cases: Path
    listen: str = "127.0.0.1:8443"
    idle_minutes: int = 15
    tls_cert: Path | None = None
    tls_key: Path | None = None
    root: Path | None = None
    crls: Any = ()


def _relative(base: Path, value: Any, key: str) -> Path:
    if isinstance(value, Path):
        path = value
    elif isinstance(value, str) and value:
        path = Path(value)
    else:
        raise ConfigError(f"{key} must be a path")
    return path if path.is_absolute() else base / path


def _file(base: Path, value: Any, key: str) -> Path:
    path = _relative(base, value, key)
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist")
    return path


def _table(obj: Any, key: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"[{key}] must be a table")
    unknown = set(obj) - allowed
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown key")
    missing = allowed - set(obj)
    if missing:
        raise ConfigError(f"{key}.{sorted(missing)[0]} is required")
    return obj


def _person(chain: Path, key: str, role: str) -> Identity:
    """The identity of a person's certificate (a ``verifier``'s, an ``officer``'s)."""
    try:
        leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
        identity = identity_from_certificate(leaf)
    except (ValueError, IndexError, FedmatchError):
        raise ConfigError(f"{key}.chain: {chain} does not hold a federation certificate") from None
    if identity.role != role or identity.member_state is None:
        raise ConfigError(f"{key}.chain names {identity.dns}, not a {role} of a member state")
    return identity


def _verifier(base: Path, raw: Any, index: int) -> VerifierEntry:
    key = f"verifier[{index}]"
    table = _table(raw, key, {"chain", "key"})
    chain = _file(base, table["chain"], f"{key}.chain")
    identity = _person(chain, key, "verifier")
    assert identity.member_state is not None
    return VerifierEntry(
        identity.dns,
        identity.instance or identity.dns,
        identity.member_state,
        chain,
        _file(base, table["key"], f"{key}.key"),
    )


def _officer(base: Path, raw: Any) -> OfficerConfig:
    if isinstance(raw, dict) and "name" in raw:
        raise ConfigError(
            "officer.name: the official's id is their officer certificate's (officer.chain, "
            "`fedmatch pki issue --role officer --instance ID`): remove name"
        )
    table = _table(raw, "officer", {"chain", "unit", "operator", "coordinator", "key"})
    for key in ("unit", "coordinator"):
        value = table[key]
        if not isinstance(value, str) or not value or len(value) > 64 or not value.isprintable():
            raise ConfigError(f"officer.{key} must be at most 64 printable characters")
    chain = _file(base, table["chain"], "officer.chain")
    identity = _person(chain, "officer", "officer")
    assert identity.member_state is not None
    return OfficerConfig(
        identity.instance,
        table["unit"],
        _file(base, table["operator"], "officer.operator"),
        table["coordinator"],
        _file(base, table["key"], "officer.key"),
        chain,
        identity.member_state,
    )


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> DeskConfig:
    """``desk.toml`` (then ``FEDMATCH_DESK_*``, then ``overrides``) as a checked config."""
    doc = read_toml(path)
    unknown = set(doc) - {"desk", "verifier", "officer"}
    if unknown:
        raise ConfigError(f"[{sorted(unknown)[0]}]: unknown table")
    values = load_section(path, "desk", "FEDMATCH_DESK_", _DeskTable, overrides or {})
    base = path.parent
    cases = _relative(base, values["cases"], "desk.cases")
    if not cases.is_dir():
        raise ConfigError(f"desk.cases: {cases} is not a folder")
    crls = values.get("crls", ())
    if isinstance(crls, str):
        crls = [c for c in crls.split(os.pathsep) if c]
    if not isinstance(crls, list | tuple):
        raise ConfigError("desk.crls must be a list of CRL files")
    optional = {
        k: _file(base, values[k], f"desk.{k}") if values.get(k) is not None else None
        for k in ("tls_cert", "tls_key", "root")
    }
    raw_verifiers = doc.get("verifier", [])
    if not isinstance(raw_verifiers, list):
        raise ConfigError("[[verifier]] must be an array of tables")
    verifiers = tuple(_verifier(base, v, i) for i, v in enumerate(raw_verifiers))
    officer = _officer(base, doc["officer"]) if "officer" in doc else None
    if not verifiers and officer is None:
        raise ConfigError("desk.toml names nobody: add [[verifier]] entries or [officer]")
    return DeskConfig(
        cases=cases,
        listen=str(values.get("listen", "127.0.0.1:8443")),
        idle_minutes=int(values.get("idle_minutes", 15)),
        tls_cert=optional["tls_cert"],
        tls_key=optional["tls_key"],
        root=optional["root"],
        crls=tuple(_file(base, c, f"desk.crls[{i}]") for i, c in enumerate(crls)),
        verifiers=verifiers,
        officer=officer,
    )
