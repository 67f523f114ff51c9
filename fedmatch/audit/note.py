"""Signed notes, checkpoints and witness cosignatures: the text formats of the audit logs.

This module owns

* the Ed25519 keys of log parties (:class:`NoteSigner`) and their public encodings, the
  ``skey``/``vkey`` strings of golang.org/x/mod/sumdb/note (``NewSigner``/``NewVerifier``);
* the C2SP signed-note format (https://c2sp.org/signed-note, v1.0.0): a text ending in a
  newline, a blank line, then lines ``"— <key name> <base64(key id || signature)>"``;
* C2SP checkpoints (https://c2sp.org/tlog-checkpoint): origin, tree size, root hash and
  optional extension lines, as the text of a signed note;
* C2SP cosignatures (https://c2sp.org/tlog-cosignature), Ed25519 ``cosignature/v1`` only:
  a witness's timestamped signature over ``"cosignature/v1\\ntime <t>\\n" || checkpoint``.

Parsing is strict: anything the specs allow in only one spelling (base64, decimals) is
accepted only in that spelling, so one statement has exactly one encoding. Verification
raises :class:`AuditVerificationError` and never returns a bool. Caller mistakes (a bad name,
a malformed key string) raise :class:`InvalidInput`; unusable key files raise
:class:`ConfigError` naming the path. No message ever carries key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.errors import ConfigError, InvalidInput
from fedmatch.fileio import fsync_directory

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CosignatureVerifier",
    "Note",
    "NoteSigner",
    "NoteVerifier",
    "Signature",
    "add_signature",
    "cosign",
    "cosignatures",
    "open_checkpoint",
    "open_note",
    "sign_note",
    "verify_cosignature",
]

# Bounds on untrusted input. 100 signature lines is the cap of Go's note.Open; signed-note
# only requires accepting 16. 1 MiB bounds the work before any signature is checked.
MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100

# Signature type bytes assigned by signed-note ("Signature types"): 0x01 is a plain Ed25519
# note signature, 0x04 an Ed25519 cosignature/v1. The byte enters the key id, so one Ed25519
# key has a different key id in each role and a line of one kind never matches the other.
_ALG_ED25519 = 0x01
_ALG_COSIGNATURE_V1 = 0x04

_KEY_ID_SIZE = 4
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64
_TIMESTAMP_SIZE = 8
# tlog-cosignature: the timestamp "MUST NOT exceed 2^63 - 1".
_MAX_TIMESTAMP = (1 << 63) - 1
# Tree sizes are uint64 everywhere (RFC 6962, Go's log.Checkpoint).
_MAX_TREE_SIZE = (1 << 64) - 1
# The checkpoint root is an RFC 6962 SHA-256 Merkle tree hash.
_ROOT_SIZE = 32
_MAX_KEY_FILE_BYTES = 4096

_SIG_PREFIX = "— ".encode()  # U+2014 EM DASH, U+0020 SPACE
_COSIGNATURE_HEADER = b"cosignature/v1\n"
# Reserved prefix: a note body or checkpoint origin starting with it could be confused with a
# cosigned message, which is "cosignature/v1\ntime <t>\n" followed by a checkpoint body.
_COSIGNATURE_DOMAIN = "cosignature/"

# ASCII control characters other than newline, forbidden anywhere in a signed note. In UTF-8
# these bytes only ever encode themselves, so checking bytes is the same as checking runes.
_CONTROL_BYTES = re.compile(rb"[\x00-\x09\x0b-\x1f]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f]")
_STD_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")
# Decimal without leading zeros; [0-9] (not \d) so that non-ASCII digits are refused.
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")

# The Unicode White_Space property, which is what Go's unicode.IsSpace tests: key names
# "MUST NOT contain any Unicode spaces" (signed-note) and Go's isValidName uses IsSpace.
_UNICODE_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)


# --------------------------------------------------------------------------------------------
# Small helpers


def _name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid key name (signed-note: non-empty, no Unicode spaces, no
    '+'), or None. Control characters are refused too: a note may not contain them."""
    if not isinstance(name, str) or not name:
        return "key name must be a non-empty string"
    if "+" in name:
        return "key name must not contain '+'"
    if any(ch in _UNICODE_SPACES for ch in name) or _CONTROL_CHARS.search(name):
        return "key name must not contain spaces or control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "key name is not valid UTF-8"
    return None


def _check_name(name: object) -> str:
    problem = _name_problem(name)
    if problem is not None:
        raise InvalidInput(problem)
    assert isinstance(name, str)
    return name


def _key_id(name: str, alg: int, public: bytes) -> bytes:
    # signed-note: key ID = SHA-256(key name || 0x0A || signature type || public key)[:4];
    # tlog-cosignature uses the same construction with type 0x04.
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public).digest()[
        :_KEY_ID_SIZE
    ]


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64 (RFC 4648 section 4, padded): the decoding, or None.

    Only the canonical spelling is accepted (it must re-encode to itself), so that unused
    trailing bits cannot give one signature several textual forms.
    """
    if not text or len(text) % 4 or not _STD_BASE64.fullmatch(text):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _text_problem(text: bytes, what: str) -> str | None:
    """Why ``text`` is not a valid note text (non-empty, ending in a newline, UTF-8, no
    control characters but newline), or None."""
    if not isinstance(text, bytes):
        return f"{what} must be bytes"
    if not text:
        return f"{what} is empty"
    if len(text) > MAX_NOTE_BYTES:
        return f"{what} is larger than {MAX_NOTE_BYTES} bytes"
    if not text.endswith(b"\n"):
        return f"{what} does not end in a newline"
    if _CONTROL_BYTES.search(text):
        return f"{what} contains a control character"
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return f"{what} is not valid UTF-8"
    return None


def _public_key(public: bytes) -> Ed25519PublicKey:
    if not isinstance(public, bytes) or len(public) != _ED25519_KEY_SIZE:
        raise InvalidInput(f"an Ed25519 public key is {_ED25519_KEY_SIZE} bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(public)
    except ValueError:
        raise InvalidInput("not a valid Ed25519 public key") from None


def _parse_vkey(vkey: str, alg: int, kind: str) -> tuple[str, bytes, bytes]:
    """Decode ``<name>+<hex key id>+<base64(alg || public key)>`` (x/mod note.NewVerifier):
    name, key id, public key. The key id must match the key, as Go requires."""
    if not isinstance(vkey, str):
        raise InvalidInput(f"{kind} key must be a string")
    # The name has no '+', the key id is hex: the first two '+' split the fields, and the
    # base64 key after them may itself contain '+'.
    name, sep1, rest = vkey.partition("+")
    hex_id, sep2, key64 = rest.partition("+")
    if not sep1 or not sep2:
        raise InvalidInput(f"{kind} key is not of the form <name>+<key id>+<key>")
    problem = _name_problem(name)
    if problem is not None:
        raise InvalidInput(f"{kind} key: {problem}")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise InvalidInput(f"{kind} key: key id must be 8 hex digits")
    raw = _b64decode(key64)
    if raw is None:
        raise InvalidInput(f"{kind} key: key is not canonical base64")
    if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] != alg:
        raise InvalidInput(f"{kind} key: not a type 0x{alg:02x} Ed25519 key")
    public = raw[1:]
    if _key_id(name, alg, public) != bytes.fromhex(hex_id):
        raise InvalidInput(f"{kind} key: key id does not match the key")
    _public_key(public)
    return name, bytes.fromhex(hex_id), public


def _encode_vkey(name: str, alg: int, public: bytes) -> str:
    return f"{name}+{_key_id(name, alg, public).hex()}+{_b64encode(bytes([alg]) + public)}"


def _verify_ed25519(key: Ed25519PublicKey, message: bytes, signature: bytes, who: str) -> None:
    if not isinstance(signature, bytes) or len(signature) != _ED25519_SIG_SIZE:
        raise AuditVerificationError(f"signature by {who} is not {_ED25519_SIG_SIZE} bytes")
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise AuditVerificationError(f"signature by {who} does not verify") from None


# --------------------------------------------------------------------------------------------
# Keys


class NoteSigner:
    """An Ed25519 private key with the name it signs under.

    The same key can sign notes (type 0x01, e.g. a log's checkpoints) and cosignatures
    (type 0x04, a witness); the two have different key ids and messages. Operators should
    still give a log and a witness distinct keys (tlog-cosignature requires distinct keys
    for distinct cosigners).
    """

    __slots__ = ("_private", "_public", "key_id", "name")

    name: str
    key_id: bytes

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self.name = _check_name(name)
        self._private = private
        self._public = private.public_key().public_bytes_raw()
        self.key_id = _key_id(self.name, _ALG_ED25519, self._public)

    def __repr__(self) -> str:
        # Never the key: only what identifies it.
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id.hex()})"

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        _check_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Decode ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`` (x/mod
        note.NewSigner). The key id must match the derived public key."""
        if not isinstance(skey, str):
            raise InvalidInput("signer key must be a string")
        prefix = "PRIVATE+KEY+"
        if not skey.startswith(prefix):
            raise InvalidInput("signer key does not start with PRIVATE+KEY+")
        name, sep1, rest = skey[len(prefix) :].partition("+")
        hex_id, sep2, key64 = rest.partition("+")
        if not sep1 or not sep2:
            raise InvalidInput("signer key is not of the form PRIVATE+KEY+<name>+<id>+<key>")
        problem = _name_problem(name)
        if problem is not None:
            raise InvalidInput(f"signer key: {problem}")
        if not _HEX_KEY_ID.fullmatch(hex_id):
            raise InvalidInput("signer key: key id must be 8 hex digits")
        raw = _b64decode(key64)
        if raw is None or len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] != _ALG_ED25519:
            raise InvalidInput("signer key: not a type 0x01 Ed25519 seed")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id != bytes.fromhex(hex_id):
            raise InvalidInput("signer key: key id does not match the key")
        return signer

    @classmethod
    def load(cls, path: Path) -> NoteSigner:
        """Read a key file holding one skey line. Refuses files that group or other may
        read or write: a private key must not be exposed by a loose mode."""
        path = Path(path)
        try:
            # O_NONBLOCK: a FIFO at the path must not hang the caller (no effect on files).
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
            fd = os.open(path, flags)
        except OSError as exc:
            raise ConfigError(f"key file {path} could not be opened ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as fh:
            # fstat the opened file, not the path, so the mode checked is the mode of the
            # bytes read (no swap between check and use).
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"key file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise ConfigError(
                    f"key file {path} is accessible by group or other "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); make it 0600"
                )
            try:
                data = fh.read(_MAX_KEY_FILE_BYTES + 1)
            except OSError as exc:
                raise ConfigError(f"key file {path} could not be read ({exc.strerror})") from None
        if len(data) > _MAX_KEY_FILE_BYTES:
            raise ConfigError(f"key file {path} is too large to be a signer key")
        try:
            return cls.from_skey(data.decode("utf-8").strip())
        except (UnicodeDecodeError, InvalidInput):
            # from None: neither the contents nor the parser's view of them may leak.
            raise ConfigError(f"key file {path} does not hold a valid signer key") from None

    def save(self, path: Path) -> None:
        """Write the skey to a new file, mode 0600, never replacing an existing file.

        The key is written and fsynced to a temporary file in the same directory, which is
        then hard-linked into place: link(2), unlike rename(2), fails if the target exists,
        so a file created concurrently is never overwritten, and readers see either no file
        or the whole key.
        """
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise ConfigError(f"key file {path} already exists; refusing to overwrite it")
        data = (self.skey() + "\n").encode("utf-8")
        directory = path.parent
        try:
            # mkstemp creates the file 0600 (O_EXCL): the key is never readable by others.
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise ConfigError(f"key file {path} could not be created ({exc.strerror})") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConfigError(
                    f"key file {path} already exists; refusing to overwrite it"
                ) from None
            except OSError as exc:
                # Filesystems without hard links: fall back to rename, re-checking first.
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                if path.exists() or path.is_symlink():
                    raise ConfigError(
                        f"key file {path} already exists; refusing to overwrite it"
                    ) from None
                os.rename(tmp, path)
            fsync_directory(directory)
        except OSError as exc:
            raise ConfigError(f"key file {path} could not be written ({exc.strerror})") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def skey(self) -> str:
        seed = self._private.private_bytes_raw()
        encoded = _b64encode(bytes([_ALG_ED25519]) + seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{encoded}"

    def vkey(self) -> str:
        return _encode_vkey(self.name, _ALG_ED25519, self._public)

    def cosigner_vkey(self) -> str:
        return _encode_vkey(self.name, _ALG_COSIGNATURE_V1, self._public)

    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_public_key(self.name, self._public)

    def cosignature_verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier.from_public_key(self.name, self._public)

    def sign(self, message: bytes) -> bytes:
        """Raw 64-byte Ed25519 signature over ``message``.

        Callers choose their own domain prefix. It must never make ``message`` a valid note
        text or start it with ``cosignature/``: the same key signs notes and cosignatures.
        """
        if not isinstance(message, bytes):
            raise InvalidInput("message to sign must be bytes")
        return self._private.sign(message)

    def public_key_bytes(self) -> bytes:
        return self._public


class _Verifier:
    """A trusted Ed25519 key of one type: name, key id (which depends on the type) and key.
    Subclasses fix the type byte and the kind of vkey they accept."""

    __slots__ = ("_key", "_public", "key_id", "name")
    _ALG: int
    _KIND: str

    name: str
    key_id: bytes

    def __init__(self, name: str, public: bytes) -> None:
        self.name = _check_name(name)
        self._key = _public_key(public)
        self._public = public
        self.key_id = _key_id(name, self._ALG, public)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, key_id={self.key_id.hex()})"

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        # Only vkeys of this class's type: a 0x01 vkey names a note key and a 0x04 one a
        # witness (transparency-dev/formats accepts both as witnesses, which would blur
        # which role a configured key has).
        name, _, public = _parse_vkey(vkey, cls._ALG, cls._KIND)
        return cls(name, public)

    @classmethod
    def from_public_key(cls, name: str, public: bytes) -> Self:
        return cls(name, public)

    def vkey(self) -> str:
        return _encode_vkey(self.name, self._ALG, self._public)

    def public_key_bytes(self) -> bytes:
        return self._public


class NoteVerifier(_Verifier):
    """A trusted note key (type 0x01): name, key id and Ed25519 public key."""

    __slots__ = ()
    _ALG = _ALG_ED25519
    _KIND = "verifier"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raw Ed25519 check of ``signature`` over ``message``; raises if it fails."""
        if not isinstance(message, bytes):
            raise InvalidInput("message to verify must be bytes")
        _verify_ed25519(self._key, message, signature, f"key {self.name}+{self.key_id.hex()}")


class CosignatureVerifier(_Verifier):
    """A trusted witness key (type 0x04, cosignature/v1): name, key id, Ed25519 key."""

    __slots__ = ()
    _ALG = _ALG_COSIGNATURE_V1
    _KIND = "cosigner verifier"

    def _verify(self, message: bytes, signature: bytes, who: str) -> None:
        # Module-internal: the message is always a cosignature/v1 message built here.
        _verify_ed25519(self._key, message, signature, who)


_V = TypeVar("_V", NoteVerifier, CosignatureVerifier)


# --------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_problem(
    origin: object, size: object, root: object, extensions: object
) -> str | None:
    """Why these fields do not form a valid checkpoint (tlog-checkpoint), or None."""
    if not isinstance(origin, str) or not origin:
        return "checkpoint origin must be a non-empty string"
    if origin != origin.strip():
        return "checkpoint origin has leading or trailing space"
    if _CONTROL_CHARS.search(origin):
        return "checkpoint origin contains a control character"
    if origin.startswith(_COSIGNATURE_DOMAIN):
        return f"checkpoint origin must not start with {_COSIGNATURE_DOMAIN!r}"
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_TREE_SIZE:
        return "checkpoint tree size must be an integer in [0, 2^64)"
    if not isinstance(root, bytes) or len(root) != _ROOT_SIZE:
        return f"checkpoint root hash must be {_ROOT_SIZE} bytes"
    if not isinstance(extensions, tuple):
        return "checkpoint extensions must be a tuple of strings"
    for line in extensions:
        if not isinstance(line, str) or not line:
            return "checkpoint extension lines must be non-empty strings"
        if _CONTROL_CHARS.search(line):
            return "checkpoint extension line contains a control character"
    for text in (origin, *extensions):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "checkpoint text is not valid UTF-8"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP checkpoint body: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _checkpoint_problem(self.origin, self.size, self.root, self.extensions)
        if problem is not None:
            raise InvalidInput(problem)
        if len(self.body()) > MAX_NOTE_BYTES:
            raise InvalidInput(f"checkpoint is larger than {MAX_NOTE_BYTES} bytes")

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), _b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body, strictly: ``parse(b).body() == b`` whenever it returns."""
        if not isinstance(body, bytes):
            raise InvalidInput("checkpoint body must be bytes")
        problem = _text_problem(body, "checkpoint")
        if problem is not None:
            raise AuditVerificationError(problem)
        lines = body.decode("utf-8")[:-1].split("\n")
        if len(lines) < 3:
            raise AuditVerificationError("checkpoint has fewer than three lines")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.fullmatch(size_text):
            raise AuditVerificationError("checkpoint tree size is not a canonical decimal")
        root = _b64decode(root_text)
        if root is None:
            raise AuditVerificationError("checkpoint root hash is not canonical base64")
        problem = _checkpoint_problem(origin, int(size_text), root, tuple(extensions))
        if problem is not None:
            raise AuditVerificationError(problem)
        return cls(origin, int(size_text), root, tuple(extensions))


# --------------------------------------------------------------------------------------------
# Signed notes


def _signature_problem(name: object, key_id: object, value: object) -> str | None:
    problem = _name_problem(name)
    if problem is not None:
        return f"signature: {problem}"
    if not isinstance(key_id, bytes) or len(key_id) != _KEY_ID_SIZE:
        return f"signature key id must be {_KEY_ID_SIZE} bytes"
    if not isinstance(value, bytes) or not value:
        return "signature value must be non-empty bytes"
    return None


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, 4-byte key id, and the bytes after the key id (an
    Ed25519 signature, or for a cosignature the timestamp followed by the signature)."""

    name: str
    key_id: bytes
    value: bytes

    def __post_init__(self) -> None:
        problem = _signature_problem(self.name, self.key_id, self.value)
        if problem is not None:
            raise InvalidInput(problem)

    def line(self) -> bytes:
        return _SIG_PREFIX + f"{self.name} {_b64encode(self.key_id + self.value)}\n".encode()


def _note_problem(body: bytes, signatures: tuple[Signature, ...]) -> str | None:
    problem = _text_problem(body, "note text")
    if problem is not None:
        return problem
    if not signatures:
        return "note has no signature lines"
    if len(signatures) > MAX_SIGNATURES:
        return f"note has more than {MAX_SIGNATURES} signature lines"
    seen: set[tuple[str, bytes]] = set()
    size = len(body) + 1
    for sig in signatures:
        if not isinstance(sig, Signature):
            return "note signatures must be Signature objects"
        key = (sig.name, sig.key_id)
        if key in seen:
            return f"note has two signature lines for key {sig.name}+{sig.key_id.hex()}"
        seen.add(key)
        size += len(sig.line())
    if size > MAX_NOTE_BYTES:
        return f"note is larger than {MAX_NOTE_BYTES} bytes"
    return None


@dataclass(frozen=True)
class Note:
    """A signed note: its text (``body``, ending in a newline) and its signature lines.

    A note never holds two lines for one (name, key id): Go's note.Open silently skips
    repeats, which would let a second, different signature by a known key go unchecked;
    here such a note is malformed.
    """

    body: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.signatures, tuple):
            object.__setattr__(self, "signatures", tuple(self.signatures))
        problem = _note_problem(self.body, self.signatures)
        if problem is not None:
            raise InvalidInput(problem)

    def text(self) -> bytes:
        return self.body + b"\n" + b"".join(sig.line() for sig in self.signatures)

    @classmethod
    def parse(cls, text: bytes) -> Note:
        """Split and decode a signed note; checks syntax only, verifies nothing."""
        if not isinstance(text, bytes):
            raise InvalidInput("note must be bytes")
        if len(text) > MAX_NOTE_BYTES:
            raise AuditVerificationError(f"note is larger than {MAX_NOTE_BYTES} bytes")
        # signed-note: valid UTF-8, no ASCII control characters other than newline.
        if _CONTROL_BYTES.search(text):
            raise AuditVerificationError("note contains a control character")
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            raise AuditVerificationError("note is not valid UTF-8") from None
        # "the text is separated from the signatures by the last empty line in the note"
        # (signed-note; Go: bytes.LastIndex(msg, "\n\n")). The text may contain empty lines.
        split = text.rfind(b"\n\n")
        if split < 0:
            raise AuditVerificationError("note has no blank line before its signatures")
        body, sig_block = text[: split + 1], text[split + 2 :]
        if not sig_block or not sig_block.endswith(b"\n"):
            raise AuditVerificationError("note has no signature lines ending in a newline")
        lines = sig_block[:-1].split(b"\n")
        # Count before decoding anything, to bound the work an oversized note can cause.
        if len(lines) > MAX_SIGNATURES:
            raise AuditVerificationError(f"note has more than {MAX_SIGNATURES} signature lines")
        signatures: list[Signature] = []
        seen: set[tuple[str, bytes]] = set()
        for index, raw_line in enumerate(lines):
            if not raw_line.startswith(_SIG_PREFIX):
                raise AuditVerificationError(f"note signature line {index} lacks '— '")
            name, sep, encoded = raw_line[len(_SIG_PREFIX) :].decode("utf-8").partition(" ")
            if not sep or _name_problem(name) is not None:
                raise AuditVerificationError(f"note signature line {index} has a bad key name")
            raw = _b64decode(encoded)
            # Go requires key id plus at least one byte of signature.
            if raw is None or len(raw) <= _KEY_ID_SIZE:
                raise AuditVerificationError(f"note signature line {index} is not valid base64")
            key_id, value = raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:]
            if (name, key_id) in seen:
                raise AuditVerificationError(
                    f"note has two signature lines for key {name}+{key_id.hex()}"
                )
            seen.add((name, key_id))
            signatures.append(Signature(name, key_id, value))
        problem = _note_problem(body, tuple(signatures))
        if problem is not None:
            raise AuditVerificationError(problem)
        return cls(body, tuple(signatures))


def _check_body_for_signing(body: bytes) -> None:
    problem = _text_problem(body, "note text")
    if problem is not None:
        raise InvalidInput(problem)
    if body.startswith(_COSIGNATURE_DOMAIN.encode()):
        raise InvalidInput(f"note text must not start with {_COSIGNATURE_DOMAIN!r}")


def sign_note(body: bytes, signer: NoteSigner) -> bytes:
    """The full note text of ``body`` with one signature by ``signer`` (type 0x01)."""
    # A body starting with "cosignature/" is refused: if the signer's key also cosigns, such a
    # note signature would be a valid cosignature over the rest of the body.
    _check_body_for_signing(body)
    sig = Signature(signer.name, signer.key_id, signer.sign(body))
    return Note(body, (sig,)).text()


def add_signature(note_text: bytes, line_name: str, key_id: bytes, value: bytes) -> bytes:
    """Append one signature line to a note, keeping the existing lines.

    Adding a line identical to one already present changes nothing; adding a different
    value for a (name, key id) already present raises InvalidInput, so that an existing
    signature is never silently replaced.
    """
    note = Note.parse(note_text)
    new = Signature(line_name, key_id, value)
    for sig in note.signatures:
        if (sig.name, sig.key_id) == (new.name, new.key_id):
            if sig.value == new.value:
                return note.text()
            raise InvalidInput(f"note already has a different signature by {new.name}")
    return Note(note.body, (*note.signatures, new)).text()


def _index_verifiers(verifiers: Sequence[_V]) -> dict[tuple[str, bytes], _V]:
    """(name, key id) -> verifier. Two different keys under one (name, key id) make the
    trust configuration ambiguous (Go: "ambiguous key"), which is refused."""
    index: dict[tuple[str, bytes], _V] = {}
    for v in verifiers:
        previous = index.setdefault((v.name, v.key_id), v)
        if previous.public_key_bytes() != v.public_key_bytes():
            raise InvalidInput(f"two trusted keys share the name and key id {v.name}")
    return index


def open_note(text: bytes, verifiers: Sequence[NoteVerifier]) -> tuple[Note, list[str]]:
    """Parse and verify a note against trusted note keys.

    Signatures by unknown keys (name and key id not both matching a trusted key) are
    ignored, as signed-note requires. A signature by a trusted key that fails to verify
    rejects the whole note, and so does a note no trusted key signed. Returns the note and
    the names of the trusted keys whose signatures verified, in line order.
    """
    trusted = _index_verifiers(verifiers)
    note = Note.parse(text)
    if note.body.startswith(_COSIGNATURE_DOMAIN.encode()):
        # Such a body is what a cosignature signs: never accept it as a note.
        raise AuditVerificationError(f"note text starts with {_COSIGNATURE_DOMAIN!r}")
    names: list[str] = []
    for sig in note.signatures:
        verifier = trusted.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        verifier.verify(note.body, sig.value)
        if sig.name not in names:
            names.append(sig.name)
    if not names:
        raise AuditVerificationError("note has no signature by a trusted key")
    return note, names


def open_checkpoint(
    text: bytes, verifier: NoteVerifier, origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint: it must carry a valid signature by ``verifier`` and, if
    ``origin`` is given, have that origin. Other signature lines (cosignatures) are left to
    :func:`cosignatures`."""
    note, _ = open_note(text, [verifier])
    checkpoint = Checkpoint.parse(note.body)
    if origin is not None and checkpoint.origin != origin:
        raise AuditVerificationError("checkpoint origin is not the expected origin")
    return checkpoint, note


# --------------------------------------------------------------------------------------------
# Cosignatures (tlog-cosignature, Ed25519 cosignature/v1)


def _cosigned_message(checkpoint_body: bytes, timestamp: int) -> bytes:
    # tlog-cosignature, "Ed25519 signed message": "cosignature/v1" line, "time <t>" line
    # (ASCII decimal, no leading zeroes), then the whole checkpoint body including extension
    # lines and the final newline.
    return _COSIGNATURE_HEADER + b"time %d\n" % timestamp + checkpoint_body


def cosign(checkpoint_body: bytes, signer: NoteSigner, timestamp: int) -> Signature:
    """A witness's cosignature/v1 over a checkpoint body at ``timestamp`` (POSIX seconds).

    The value is the ``timestamped_signature`` of tlog-cosignature: the timestamp as a
    big-endian u64 followed by the 64-byte Ed25519 signature; the key id uses type 0x04.
    """
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise InvalidInput("cosignature timestamp must be an integer")
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise InvalidInput("cosignature timestamp must be in [0, 2^63)")
    # Only well-formed checkpoints are cosigned; the parse also guarantees the message
    # cannot be mistaken for a note text (the origin may not start with "cosignature/").
    Checkpoint.parse(checkpoint_body)
    signature = signer.sign(_cosigned_message(checkpoint_body, timestamp))
    key_id = _key_id(signer.name, _ALG_COSIGNATURE_V1, signer.public_key_bytes())
    return Signature(signer.name, key_id, timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature)


def verify_cosignature(
    checkpoint_body: bytes, signature: Signature, verifier: CosignatureVerifier
) -> int:
    """Check one cosignature/v1 over a checkpoint body; returns its timestamp."""
    who = f"cosigner {verifier.name}+{verifier.key_id.hex()}"
    if signature.name != verifier.name or signature.key_id != verifier.key_id:
        raise AuditVerificationError(f"signature is not by {who}")
    if len(signature.value) != _TIMESTAMP_SIZE + _ED25519_SIG_SIZE:
        raise AuditVerificationError(f"cosignature by {who} has the wrong length")
    timestamp = int.from_bytes(signature.value[:_TIMESTAMP_SIZE], "big")
    if timestamp > _MAX_TIMESTAMP:
        raise AuditVerificationError(f"cosignature by {who} has a timestamp beyond 2^63 - 1")
    Checkpoint.parse(checkpoint_body)
    verifier._verify(
        _cosigned_message(checkpoint_body, timestamp), signature.value[_TIMESTAMP_SIZE:], who
    )
    return timestamp


def cosignatures(note: Note, verifiers: Sequence[CosignatureVerifier]) -> dict[str, int]:
    """Timestamps of the valid cosignatures on ``note`` by trusted witnesses, by name.

    Lines by unknown keys are ignored; a line by a trusted witness key that fails to verify
    raises. If one witness name has several trusted keys that all cosigned, the latest
    timestamp is reported.
    """
    trusted = _index_verifiers(verifiers)
    found: dict[str, int] = {}
    for sig in note.signatures:
        verifier = trusted.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        timestamp = verify_cosignature(note.body, sig, verifier)
        found[sig.name] = max(timestamp, found.get(sig.name, timestamp))
    return found
