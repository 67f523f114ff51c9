"""Who may log in at the desk, and the login itself: a person's protected key is unlocked
with their passphrase and kept in server memory for their session only.

A verifier's key must be the one their ``verifier`` certificate binds (the checks of
``fedmatch verify-hit``), and with ``[desk] root`` that certificate must verify against the
federation root and CRLs (a revoked verifier cannot log in). The official's key must be the
one their own ``officer`` certificate binds, and that certificate must verify against the
federation root and CRLs of the workstation file (a revoked officer cannot log in); the
workstation's certificate only makes the channel to the coordinator. Failed logins are
logged (the name, never the passphrase) and slow the next attempt for that name: 1 s after
one failure, doubling up to a minute.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from fedmatch.audit.note import NoteSigner
from fedmatch.desk import officer
from fedmatch.desk.config import DeskConfig, VerifierEntry
from fedmatch.errors import ConfigError, FedmatchError, PermissionDenied, ResourceLimit
from fedmatch.pki import keystore
from fedmatch.pki.names import Identity, identity_from_certificate
from fedmatch.protocol.verification import VerdictSigner

__all__ = ["MAX_BACKOFF_SECONDS", "Account", "Accounts", "Unlocked"]

log = logging.getLogger("fedmatch.desk")

MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class Account:
    """A person who may log in: ``name`` is a verifier's certificate name or the
    official's id; ``role`` is ``verifier`` or ``officer``."""

    name: str
    label: str
    role: str
    member_state: str


@dataclass(frozen=True)
class Unlocked:
    """A logged-in person and the key unlocked for their session."""

    account: Account
    verdict_signer: VerdictSigner | None = None  # a verifier's
    officer_key: NoteSigner | None = None  # the official's

    def __repr__(self) -> str:
        return f"Unlocked({self.account.name!r}, {self.account.role})"


class Accounts:
    def __init__(self, config: DeskConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}
        self._verifiers = {v.name: v for v in config.verifiers}
        self.accounts = [
            Account(v.name, f"{v.person} ({v.name})", "verifier", v.member_state)
            for v in config.verifiers
        ]
        if config.officer is not None:
            officer.workstation(config.officer)  # a wrong workstation file fails at start
            self.accounts.append(
                Account(
                    config.officer.name, f"{config.officer.name} (official)", "officer",
                    config.officer.member_state,
                )
            )  # fmt: skip

    def account(self, name: str) -> Account | None:
        return next((a for a in self.accounts if a.name == name), None)

    def wait_seconds(self, name: str) -> float:
        """How long ``name`` must wait before the next attempt (0: none)."""
        with self._lock:
            _, not_before = self._failures.get(name, (0, 0.0))
        return max(0.0, not_before - self._clock())

    def login(self, name: str, passphrase: str, remote: str = "") -> Unlocked:
        """Unlock ``name``'s key; PermissionDenied (wrong name, passphrase or key),
        ResourceLimit (too soon after a failure)."""
        account = self.account(name)
        if account is None:
            log.warning("login refused for an unknown name from %s", remote or "?")
            raise PermissionDenied("wrong name or passphrase")
        wait = self.wait_seconds(name)
        if wait > 0:
            log.warning("login of %s from %s refused: back-off after failures", name, remote)
            raise ResourceLimit(
                f"too many failed logins for {name}: try again in {math.ceil(wait)} s"
            )
        try:
            key = keystore.unlock(self._key_path(account), passphrase)
        except PermissionDenied:
            with self._lock:
                count = self._failures.get(name, (0, 0.0))[0] + 1
                delay = min(2.0 ** (count - 1), MAX_BACKOFF_SECONDS)
                self._failures[name] = (count, self._clock() + delay)
            log.warning("login of %s from %s failed: wrong passphrase (%d in a row)",
                        name, remote, count)  # fmt: skip
            raise PermissionDenied("wrong name or passphrase") from None
        except ConfigError as exc:
            log.error("login of %s from %s impossible: %s", name, remote, exc)
            raise PermissionDenied(f"{name} cannot log in: {exc}") from None
        with self._lock:
            self._failures.pop(name, None)
        try:
            unlocked = self._bind(account, key)
        except OSError as exc:
            log.error("login of %s from %s impossible: %s", name, remote, exc.strerror)
            raise PermissionDenied(f"{name} cannot log in: a certificate is unreadable") from None
        except (PermissionDenied, ConfigError) as exc:
            # The passphrase was right: the key or certificate is wrong (or revoked).
            log.warning("login of %s from %s refused: %s", name, remote, exc)
            raise PermissionDenied(f"{name} cannot log in: {exc}") from None
        log.info("login of %s (%s) from %s", name, account.role, remote)
        return unlocked

    def _key_path(self, account: Account) -> Path:
        if account.role == "officer":
            assert self._config.officer is not None
            return self._config.officer.key
        return self._verifiers[account.name].key

    def _bind(self, account: Account, key: NoteSigner) -> Unlocked:
        if account.role == "officer":
            assert self._config.officer is not None
            officer.check_key(self._config.officer, key)
            return Unlocked(account, officer_key=key)
        entry = self._verifiers[account.name]
        chain = entry.chain_pem()
        identity = self._identity(entry, chain)
        # The checks of `fedmatch verify-hit`: a verifier certificate binding this very key.
        if identity.role != "verifier" or identity.dns != account.name:
            raise PermissionDenied(f"{entry.chain.name} names {identity.dns}, not {account.name}")
        if identity.signing_key != key.public_key_bytes():
            raise PermissionDenied(
                f"{entry.chain.name} binds another signing key than {entry.key.name}"
            )
        return Unlocked(account, verdict_signer=VerdictSigner(key, chain))

    def _identity(self, entry: VerifierEntry, chain: bytes) -> Identity:
        if self._config.root is None:
            return identity_from_certificate(x509.load_pem_x509_certificates(chain)[0])
        from fedmatch.pki.verify import load_crls, verify_peer

        try:
            return verify_peer(chain, self._config.root.read_bytes(), load_crls(self._config.crls))
        except FedmatchError as exc:
            raise PermissionDenied(f"{entry.chain.name} is refused: {exc}") from None
