"""Passphrase-protected signing keys: a person's Ed25519 key (a :class:`NoteSigner` skey) as
it rests on a shared machine (a verifier's or an officer's at the desk, an officer's at an
operator workstation: ``fedmatch desk protect-key`` writes one).

The skey is encrypted with AES-256-GCM under a key derived from the passphrase with scrypt
(n = 2**15, r = 8, p = 1: about 32 MiB and a tenth of a second per attempt) and kept in a
small JSON file (mode 0600, never overwritten)::

    {"format": "fedmatch-protected-key-v1", "salt": "<b64>", "nonce": "<b64>",
     "ciphertext": "<b64>"}

The scrypt parameters belong to the format name, not to the file: a file cannot weaken
them. The format name is the authenticated data, so a file cannot pass for another format.
:func:`unlock` gives the same :class:`PermissionDenied` for a wrong passphrase and for a
file tampered with; no message ever carries the passphrase or the key.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fedmatch.audit.note import NoteSigner
from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.fileio import read_file, write_file

__all__ = ["FORMAT", "MIN_PASSPHRASE", "protect", "protect_file", "unlock"]

FORMAT = "fedmatch-protected-key-v1"
MIN_PASSPHRASE = 10
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SALT_BYTES, _NONCE_BYTES = 16, 12
# An skey is about 100 bytes; the JSON around it a few hundred more.
_MAX_FILE_BYTES = 4096


def _derive(passphrase: str, salt: bytes) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(passphrase.encode("utf-8"))


def _check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise InvalidInput(f"a passphrase has at least {MIN_PASSPHRASE} characters")
    if not passphrase.isprintable():
        raise InvalidInput("a passphrase is printable text (no control characters)")


def protect(signer: NoteSigner, passphrase: str, path: Path) -> None:
    """Write ``signer``'s key to the new file ``path``, encrypted under ``passphrase``."""
    _check_passphrase(passphrase)
    salt = secrets.token_bytes(_SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(_derive(passphrase, salt)).encrypt(
        nonce, signer.skey().encode("utf-8"), FORMAT.encode()
    )
    body = {
        "format": FORMAT,
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    _create(path, (json.dumps(body) + "\n").encode())


def protect_file(key: Path, out: Path, passphrase: str) -> NoteSigner:
    """Encrypt the plain key file ``key`` (an skey, mode 0600) into ``out``; returns the key
    (its name and id say which one was protected)."""
    signer = NoteSigner.load(key)
    protect(signer, passphrase, out)
    return signer


def _create(path: Path, data: bytes) -> None:
    """A new file, mode 0600, never replacing an existing one."""
    write_file(path, data, 0o600, replace=False)


def _read(path: Path) -> bytes:
    """The protected key file: a regular file that only its owner may read, and small."""
    data = read_file(path, private=True)
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError(f"key file {path} is too large to be a protected key")
    return data


def unlock(path: Path, passphrase: str) -> NoteSigner:
    """The key in the protected file ``path``. ConfigError when the file is missing or is
    not a protected key at all; PermissionDenied when the passphrase does not open it (a
    wrong passphrase and a file tampered with look the same)."""
    data = _read(path)
    try:
        obj = json.loads(data)
    except ValueError:
        raise ConfigError(f"key file {path} is not a protected key") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ConfigError(f"key file {path} is not a protected key ({FORMAT})")
    denied = PermissionDenied(f"the passphrase does not unlock {path.name}")
    try:
        salt = base64.b64decode(obj["salt"], validate=True)
        nonce = base64.b64decode(obj["nonce"], validate=True)
        sealed = base64.b64decode(obj["ciphertext"], validate=True)
        if len(salt) != _SALT_BYTES or len(nonce) != _NONCE_BYTES:
            raise ValueError
        plain = AESGCM(_derive(passphrase, salt)).decrypt(nonce, sealed, FORMAT.encode())
        return NoteSigner.from_skey(plain.decode("utf-8"))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidTag, InvalidInput):
        # from None: nothing of the file's contents or of the derivation may surface.
        raise denied from None
