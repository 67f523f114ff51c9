"""Templates encrypted at rest: envelope encryption of the register's template blobs.

A random 256-bit *data key* encrypts every template blob with AES-256-GCM (a fresh 96-bit
nonce per blob). The associated data binds each blob to its register (a random register id)
and its row (the record's reference number), so a blob copied to another row or another
register does not decrypt. The data key is kept in the register only *wrapped*: encrypted
with AES-256-GCM under a key-encryption key (KEK) that lives outside the register, in a file
readable only by its owner (mode 0600, checked) or in an environment variable. A KEK is named
by its key id, a fingerprint of the key that the register records beside the wrapped key.

Rotation re-wraps the data key under a new KEK in one transaction, without touching the
templates; ``reencrypt`` also replaces the data key (every template decrypted and encrypted
again in the same transaction).

The register's ``meta`` table holds ``register_id``, ``sealing_algorithm``,
``sealing_key_id`` and ``sealing_wrapped_key``; a register without them stores templates in
the clear and :func:`seal_clear_register` migrates it. Every failure is a
:class:`fedmatch.errors.PreconditionFailed` (or :class:`ConfigError` for key files) whose
message names the register and key id, never key bytes; there is no fallback to clear text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedmatch.errors import ConfigError, PreconditionFailed

__all__ = [
    "ALGORITHM",
    "KeyEncryptionKey",
    "TemplateSealer",
    "check_register_key",
    "create_key_file",
    "open_sealer",
    "rotate_register_key",
    "seal_clear_register",
    "storage_key",
]

ALGORITHM = "aes256gcm-envelope-v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_BLOB_VERSION = b"\x01"
_TEMPLATE_AAD = b"fedmatch/template/v1\x00"
# The facial image of a record is sealed under the same data key, bound to the record and
# to its kind: a template blob cannot pass for an image blob, nor one record's for another's.
_IMAGE_AAD = b"fedmatch/face-image/v1\x00"
_WRAP_AAD = b"fedmatch/register-data-key/v1\x00"
_KEY_ID_PREFIX = b"fedmatch/kek-id/v1\x00"
_META_KEYS = ("register_id", "sealing_algorithm", "sealing_key_id", "sealing_wrapped_key")


@dataclass(frozen=True)
class KeyEncryptionKey:
    """A key-encryption key and its id. The key bytes never appear in a repr or message."""

    key_id: str
    key: bytes = field(repr=False)

    @classmethod
    def from_bytes(cls, key: bytes) -> KeyEncryptionKey:
        if len(key) != _KEY_BYTES:
            raise ConfigError(f"a storage key must be {_KEY_BYTES} bytes")
        # A fingerprint under its own prefix: names the key without helping anyone guess it.
        key_id = "kek-" + hashlib.sha256(_KEY_ID_PREFIX + key).hexdigest()[:16]
        return cls(key_id, key)

    @classmethod
    def from_text(cls, text: str, where: str) -> KeyEncryptionKey:
        """Base64 of 32 bytes (what :func:`create_key_file` writes)."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: not a base64 storage key") from None
        if len(key) != _KEY_BYTES:
            raise ConfigError(f"{where}: a storage key must be {_KEY_BYTES} bytes of base64")
        return cls.from_bytes(key)

    @classmethod
    def from_file(cls, path: Path) -> KeyEncryptionKey:
        try:
            st = path.stat()
        except OSError:
            raise ConfigError(f"storage.key_file {path} cannot be read") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            # Like ssh: a key others can read is not a secret any more; refuse to use it.
            raise ConfigError(
                f"storage.key_file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must be readable by its owner only (chmod 600)"
            )
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"storage.key_file {path} cannot be read") from None
        return cls.from_text(text, f"storage.key_file {path}")

    @classmethod
    def from_env(cls, name: str) -> KeyEncryptionKey:
        text = os.environ.get(name)
        if not text:
            raise ConfigError(f"storage.key_env: environment variable {name} is not set")
        return cls.from_text(text, f"storage.key_env {name}")


def create_key_file(path: Path) -> KeyEncryptionKey:
    """Write a new random storage key to ``path`` (mode 0600; an existing file is kept)."""
    key = KeyEncryptionKey.from_bytes(secrets.token_bytes(_KEY_BYTES))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; a storage key is never overwritten") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(key.key).decode() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


class TemplateSealer:
    """Encrypts and decrypts one register's template blobs with its data key."""

    def __init__(self, register_id: str, key_id: str, data_key: bytes) -> None:
        self.register_id = register_id
        self.key_id = key_id
        self._aead = AESGCM(data_key)
        self._register = register_id.encode()

    def __repr__(self) -> str:
        return f"TemplateSealer(register_id={self.register_id!r}, key_id={self.key_id!r})"

    def _aad(self, reference: str, kind: bytes = _TEMPLATE_AAD) -> bytes:
        return kind + self._register + b"\x00" + reference.encode()

    def seal(self, reference: str, clear: bytes, kind: bytes = _TEMPLATE_AAD) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _BLOB_VERSION + nonce + self._aead.encrypt(nonce, clear, self._aad(reference, kind))

    def seal_image(self, reference: str, clear: bytes) -> bytes:
        return self.seal(reference, clear, _IMAGE_AAD)

    def open_image(self, reference: str, blob: bytes) -> bytes:
        return self.open(reference, blob, _IMAGE_AAD)

    def open(self, reference: str, blob: bytes, kind: bytes = _TEMPLATE_AAD) -> bytes:
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[:1] != _BLOB_VERSION:
            raise PreconditionFailed(
                f"a template of register {self.register_id} is not an encrypted blob "
                "(clear or damaged); refused"
            )
        nonce = blob[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], self._aad(reference, kind))
        except InvalidTag:
            # The reference is not echoed: it is personal data.
            raise PreconditionFailed(
                f"a template of register {self.register_id} does not authenticate "
                "(tampered, damaged, or moved from another row or register)"
            ) from None


def _wrap(kek: KeyEncryptionKey, register_id: str, data_key: bytes) -> str:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    aad = _WRAP_AAD + register_id.encode() + b"\x00" + kek.key_id.encode()
    return base64.b64encode(nonce + AESGCM(kek.key).encrypt(nonce, data_key, aad)).decode()


def _unwrap(kek: KeyEncryptionKey, register_id: str, wrapped: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(wrapped, validate=True)
    except (binascii.Error, ValueError):
        raise PreconditionFailed(f"register {where}: its wrapped data key is damaged") from None
    aad = _WRAP_AAD + register_id.encode() + b"\x00" + kek.key_id.encode()
    try:
        key = AESGCM(kek.key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise PreconditionFailed(
            f"register {where}: the storage key {kek.key_id} does not open its data key "
            "(wrong key, or the register's key record is damaged)"
        ) from None
    if len(key) != _KEY_BYTES:
        raise PreconditionFailed(f"register {where}: its data key has the wrong length")
    return key


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    rows = db.execute("SELECT key, value FROM meta").fetchall()
    return {str(k): str(v) for k, v in rows if k in _META_KEYS}


def _write_meta(db: sqlite3.Connection, values: dict[str, str]) -> None:
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        values.items(),
    )


def _sealed_meta(db: sqlite3.Connection, where: str) -> dict[str, str] | None:
    have = _meta(db)
    if "sealing_wrapped_key" not in have:
        return None
    if have.get("sealing_algorithm") != ALGORITHM or "register_id" not in have:
        raise PreconditionFailed(
            f"register {where} is sealed with {have.get('sealing_algorithm')!r}, "
            f"which this version does not read (it reads {ALGORITHM})"
        )
    return have


def _check_key_id(have: dict[str, str], kek: KeyEncryptionKey | None, where: str) -> None:
    if kek is None:
        raise PreconditionFailed(
            f"register {where} holds encrypted templates (key id {have['sealing_key_id']}); "
            "configure its key in [storage] key_file or key_env"
        )
    if kek.key_id != have["sealing_key_id"]:
        raise PreconditionFailed(
            f"register {where} is sealed under key id {have['sealing_key_id']}; "
            f"the configured storage key is {kek.key_id}"
        )


def open_sealer(
    db: sqlite3.Connection, kek: KeyEncryptionKey | None, where: str
) -> TemplateSealer | None:
    """The register's sealer: ``None`` for a clear register opened without a key; a new
    data key for an empty register opened with one (so new registers are encrypted)."""
    have = _sealed_meta(db, where)
    if have is not None:
        _check_key_id(have, kek, where)
        assert kek is not None
        data_key = _unwrap(kek, have["register_id"], have["sealing_wrapped_key"], where)
        return TemplateSealer(have["register_id"], kek.key_id, data_key)
    if kek is None:
        return None
    db.execute("BEGIN IMMEDIATE")
    try:
        (count,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
        if count:
            raise PreconditionFailed(
                f"register {where} holds {count} clear templates and a storage key is "
                "configured: encrypt them first with `fedmatch node seal --config ...`"
            )
        sealer = _initialize(db, kek)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return sealer


def _initialize(db: sqlite3.Connection, kek: KeyEncryptionKey) -> TemplateSealer:
    register_id = _meta(db).get("register_id") or secrets.token_hex(16)
    data_key = secrets.token_bytes(_KEY_BYTES)
    _write_meta(
        db,
        {
            "register_id": register_id,
            "sealing_algorithm": ALGORITHM,
            "sealing_key_id": kek.key_id,
            "sealing_wrapped_key": _wrap(kek, register_id, data_key),
        },
    )
    return TemplateSealer(register_id, kek.key_id, data_key)


def _reseal_all(db: sqlite3.Connection, old: TemplateSealer | None, new: TemplateSealer) -> int:
    """Decrypt (or read clear) and encrypt again every template and facial image; called in
    a transaction."""
    rows = db.execute("SELECT id, reference, template, face_image FROM records").fetchall()
    for row_id, reference, blob, image in rows:
        clear = old.open(reference, blob) if old is not None else bytes(blob)
        sealed_image = None
        if image is not None:
            face = old.open_image(reference, image) if old is not None else bytes(image)
            sealed_image = new.seal_image(reference, face)
        db.execute(
            "UPDATE records SET template = ?, face_image = ? WHERE id = ?",
            (new.seal(reference, clear), sealed_image, row_id),
        )
    return len(rows)


def seal_clear_register(db: sqlite3.Connection, kek: KeyEncryptionKey, where: str) -> int:
    """Migrate a clear register: a data key is created and every template encrypted, in
    one transaction (all or nothing). Returns the number of templates sealed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if _sealed_meta(db, where) is not None:
            raise PreconditionFailed(f"register {where} is already encrypted")
        count = _reseal_all(db, None, _initialize(db, kek))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return count


def rotate_register_key(
    db: sqlite3.Connection,
    old: KeyEncryptionKey,
    new: KeyEncryptionKey,
    where: str,
    reencrypt: bool = False,
) -> int:
    """Re-wrap the data key under ``new`` in one transaction; with ``reencrypt`` also
    replace the data key and encrypt every template again. Returns templates re-encrypted
    (0 for a re-wrap). The new wrapping is checked before the transaction commits."""
    db.execute("BEGIN IMMEDIATE")
    try:
        have = _sealed_meta(db, where)
        if have is None:
            raise PreconditionFailed(
                f"register {where} stores clear templates; seal it with `fedmatch node seal`"
            )
        _check_key_id(have, old, where)
        register_id = have["register_id"]
        data_key = _unwrap(old, register_id, have["sealing_wrapped_key"], where)
        count = 0
        if reencrypt:
            current = TemplateSealer(register_id, old.key_id, data_key)
            data_key = secrets.token_bytes(_KEY_BYTES)
            count = _reseal_all(db, current, TemplateSealer(register_id, new.key_id, data_key))
        wrapped = _wrap(new, register_id, data_key)
        if _unwrap(new, register_id, wrapped, where) != data_key:
            raise PreconditionFailed(f"register {where}: re-wrapped key does not round-trip")
        _write_meta(db, {"sealing_key_id": new.key_id, "sealing_wrapped_key": wrapped})
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return count


def check_register_key(path: Path, kek: KeyEncryptionKey | None) -> int:
    """Read-only check that ``kek`` opens the register file at ``path`` and that every
    template authenticates (a restore checks a backup with it before replacing anything).
    Returns the number of templates checked (0 for a clear register)."""
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        have = _sealed_meta(db, path.name)
        if have is None:
            return 0
        _check_key_id(have, kek, path.name)
        assert kek is not None
        data_key = _unwrap(kek, have["register_id"], have["sealing_wrapped_key"], path.name)
        sealer = TemplateSealer(have["register_id"], kek.key_id, data_key)
        rows = db.execute("SELECT reference, template FROM records").fetchall()
        for reference, blob in rows:
            sealer.open(reference, blob)
        return len(rows)
    finally:
        db.close()


def storage_key(key_file: Path | None, key_env: str) -> KeyEncryptionKey | None:
    """The configured key-encryption key (``[storage]`` key_file or key_env), if any."""
    if key_file is not None:
        return KeyEncryptionKey.from_file(key_file)
    if key_env:
        return KeyEncryptionKey.from_env(key_env)
    return None
