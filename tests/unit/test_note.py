"""Signed notes, checkpoints and cosignatures (fedmatch.audit.note).

Known answers come from golang.org/x/mod/sumdb/note (note_test.go: the PeterNeumann and
EnochRoot keys and signatures) and transparency-dev/formats (note_cosigv1_test.go: vkeys
and a cosignature timestamp); the rest is computed here from the spec formulas.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.note import (
    MAX_NOTE_BYTES,
    Checkpoint,
    CosignatureVerifier,
    Note,
    NoteSigner,
    NoteVerifier,
    Signature,
    add_signature,
    cosign,
    cosignatures,
    open_checkpoint,
    open_note,
    sign_note,
    verify_cosignature,
)
from fedmatch.errors import ConfigError, InvalidInput

# golang.org/x/mod/sumdb/note/note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6"
    "KE6RyyBwJnAM=\n"
).encode()
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33W"
    "Wd1RvMc+QQ=\n"
).encode()
GO_NOTE = GO_TEXT + b"\n" + PETER_SIG + ENOCH_SIG

# transparency-dev/formats note/note_cosigv1_test.go
TD_NOTE_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
TD_COSIGNER_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
TD_COSIGNATURE = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEB"
    "YJXORmnFBOBA=="
)
TD_COSIGNATURE_TIME = 1727964367

ORIGIN = "fedmatch.example/audit/IT"
ROOT = hashlib.sha256(b"root").digest()
SEED = bytes(range(32))


def expected_key_id(name: str, alg: int, public: bytes) -> bytes:
    """signed-note: SHA-256(name || 0x0A || type || public key)[:4], computed independently."""
    h = hashlib.sha256()
    h.update(name.encode())
    h.update(bytes([0x0A, alg]))
    h.update(public)
    return h.digest()[:4]


def fixed_signer(name: str, seed: bytes = SEED) -> NoteSigner:
    raw = base64.b64encode(b"\x01" + seed).decode()
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    key_id = expected_key_id(name, 0x01, public).hex()
    return NoteSigner.from_skey(f"PRIVATE+KEY+{name}+{key_id}+{raw}")


def checkpoint_body(size: int = 5, origin: str = ORIGIN) -> bytes:
    return Checkpoint(origin, size, ROOT).body()


@pytest.fixture(scope="module")
def log() -> NoteSigner:
    return fixed_signer(ORIGIN)


@pytest.fixture(scope="module")
def witness() -> NoteSigner:
    return fixed_signer("witness.example/w1", bytes(range(1, 33)))


# --------------------------------------------------------------------------------------------
# Keys


def test_key_ids_follow_the_formula() -> None:
    signer = NoteSigner.generate("example.com/log")
    public = signer.public_key_bytes()
    assert len(public) == 32
    assert signer.key_id == expected_key_id("example.com/log", 0x01, public)
    cosigner = CosignatureVerifier.from_vkey(signer.cosigner_vkey())
    assert cosigner.key_id == expected_key_id("example.com/log", 0x04, public)
    assert cosigner.key_id != signer.key_id
    b64_pub = base64.b64encode(b"\x01" + public).decode()
    assert signer.vkey() == f"example.com/log+{signer.key_id.hex()}+{b64_pub}"
    b64_co = base64.b64encode(b"\x04" + public).decode()
    assert signer.cosigner_vkey() == f"example.com/log+{cosigner.key_id.hex()}+{b64_co}"
    assert signer.skey().startswith(f"PRIVATE+KEY+example.com/log+{signer.key_id.hex()}+")


def test_go_known_keys() -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_id == bytes.fromhex("c74f20a3")
    assert verifier.key_id == expected_key_id("PeterNeumann", 0x01, verifier.public_key_bytes())
    signer = NoteSigner.from_skey(PETER_SKEY)
    assert signer.key_id == verifier.key_id
    assert signer.vkey() == PETER_VKEY
    assert signer.skey() == PETER_SKEY
    assert NoteVerifier.from_vkey(ENOCH_VKEY).key_id == bytes.fromhex("af0cfe78")
    # The base64 key of this one contains '+': only the first two '+' separate fields.
    assert NoteVerifier.from_vkey(TD_NOTE_VKEY).key_id == bytes.fromhex("7997405c")
    cosigner = CosignatureVerifier.from_vkey(TD_COSIGNER_VKEY)
    assert cosigner.key_id == bytes.fromhex("da77ade7")
    assert cosigner.vkey() == TD_COSIGNER_VKEY


def test_key_types_are_not_interchangeable() -> None:
    with pytest.raises(InvalidInput):
        CosignatureVerifier.from_vkey(PETER_VKEY)
    with pytest.raises(InvalidInput):
        NoteVerifier.from_vkey(TD_COSIGNER_VKEY)


def test_mangled_vkeys_are_refused() -> None:
    # As x/mod TestNewVerifier: every proper substring and every single-byte bump fails.
    b = PETER_VKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(InvalidInput):
                    NoteVerifier.from_vkey(b[i:j].decode())
    for i in range(len(b)):
        bumped = bytearray(b)
        bumped[i] += 1
        with pytest.raises(InvalidInput):
            NoteVerifier.from_vkey(bumped.decode())
    # x/mod: wrong key length and unknown algorithm, each with an adjusted key hash.
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(InvalidInput):
            NoteVerifier.from_vkey(bad)


def test_mangled_skeys_are_refused() -> None:
    b = PETER_SKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(InvalidInput):
                    NoteSigner.from_skey(b[i:j].decode())
    for i in range(len(b)):
        bumped = bytearray(b)
        bumped[i] += 1
        with pytest.raises(InvalidInput):
            NoteSigner.from_skey(bumped.decode())


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\x01b"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        NoteSigner.generate(name)


def test_key_errors_do_not_echo_the_key() -> None:
    mangled = PETER_SKEY[:-4] + "AAAA"
    with pytest.raises(InvalidInput) as info:
        NoteSigner.from_skey(mangled)
    assert "AYEKFALV" not in str(info.value)
    assert "AYEKFALV" not in repr(NoteSigner.from_skey(PETER_SKEY))


def test_save_load_round_trip(tmp_path: Path) -> None:
    signer = NoteSigner.generate("example.com/log")
    path = tmp_path / "log.key"
    signer.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == signer.skey() + "\n"
    loaded = NoteSigner.load(path)
    assert loaded.skey() == signer.skey()
    assert loaded.vkey() == signer.vkey()
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]  # no temporary left behind
    # Signatures by the loaded key verify under the original's vkey.
    open_note(sign_note(b"hello\n", loaded), [NoteVerifier.from_vkey(signer.vkey())])


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    path.write_text("precious\n")
    with pytest.raises(ConfigError, match="already exists"):
        NoteSigner.generate("x").save(path)
    assert path.read_text() == "precious\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700])
def test_load_refuses_loose_modes(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "log.key"
    NoteSigner.generate("x").save(path)
    os.chmod(path, mode)
    if mode & 0o077:
        with pytest.raises(ConfigError) as info:
            NoteSigner.load(path)
        assert str(path) in str(info.value)
        assert "PRIVATE" not in str(info.value)
    else:
        NoteSigner.load(path)


def test_load_reports_unusable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.key"):
        NoteSigner.load(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    secretish = PETER_SKEY[:-4] + "AAAA"
    bad.write_text(secretish + "\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        NoteSigner.load(bad)
    assert "bad.key" in str(info.value)
    assert secretish not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe")
    binary.chmod(0o600)
    with pytest.raises(ConfigError):
        NoteSigner.load(binary)


def test_raw_sign_and_verify() -> None:
    signer = NoteSigner.generate("x")
    verifier = NoteVerifier.from_public_key("x", signer.public_key_bytes())
    sig = signer.sign(b"message")
    assert len(sig) == 64
    verifier.verify(b"message", sig)
    with pytest.raises(AuditVerificationError):
        verifier.verify(b"messagf", sig)
    with pytest.raises(AuditVerificationError):
        verifier.verify(b"message", sig[:-1] + bytes([sig[-1] ^ 1]))
    with pytest.raises(AuditVerificationError):
        verifier.verify(b"message", sig[:63])
    with pytest.raises(InvalidInput):
        NoteVerifier.from_public_key("x", b"\x00" * 31)


# --------------------------------------------------------------------------------------------
# Signed notes


def test_sign_matches_go() -> None:
    # Ed25519 is deterministic: signing Go's text with Go's key gives Go's note byte for byte.
    assert sign_note(GO_TEXT, NoteSigner.from_skey(PETER_SKEY)) == GO_TEXT + b"\n" + PETER_SIG


def test_open_go_note() -> None:
    peter, enoch = NoteVerifier.from_vkey(PETER_VKEY), NoteVerifier.from_vkey(ENOCH_VKEY)
    note, names = open_note(GO_NOTE, [peter])
    assert note.body == GO_TEXT
    assert names == ["PeterNeumann"]  # Enoch's line is by an unknown key: ignored
    assert [s.name for s in note.signatures] == ["PeterNeumann", "EnochRoot"]
    assert open_note(GO_NOTE, [peter, enoch])[1] == ["PeterNeumann", "EnochRoot"]
    assert open_note(GO_NOTE, [enoch])[1] == ["EnochRoot"]
    with pytest.raises(AuditVerificationError, match="trusted"):
        open_note(GO_NOTE, [])
    assert note.text() == GO_NOTE


def test_sign_open_round_trip(log: NoteSigner) -> None:
    body = b"line one\n\nline three after an empty line\n"
    text = sign_note(body, log)
    note, names = open_note(text, [log.verifier()])
    assert (note.body, names) == (body, [ORIGIN])
    assert Note.parse(text).text() == text


def test_unknown_keys_are_ignored(log: NoteSigner) -> None:
    text = sign_note(b"hello\n", log)
    stranger = NoteSigner.generate("stranger")
    # Same name as a trusted key but another key id, and same key id under another name.
    same_name = add_signature(text, ORIGIN, b"\x00\x01\x02\x03", b"x" * 64)
    same_id = add_signature(same_name, "other", log.key_id, b"x" * 64)
    both = add_signature(same_id, "stranger", stranger.key_id, stranger.sign(b"hello\n"))
    note, names = open_note(both, [log.verifier()])
    assert names == [ORIGIN]
    assert len(note.signatures) == 4
    with pytest.raises(AuditVerificationError, match="trusted"):
        open_note(both, [NoteSigner.generate("nobody").verifier()])


def test_failing_known_signature_rejects_the_note(log: NoteSigner) -> None:
    other = NoteSigner.generate("other")
    text = sign_note(b"hello\n", log)
    bad = add_signature(text, other.name, other.key_id, other.sign(b"goodbye\n"))
    open_note(bad, [log.verifier()])  # the bad line is by an unknown key here
    with pytest.raises(AuditVerificationError, match="does not verify"):
        open_note(bad, [log.verifier(), other.verifier()])


def test_tampered_body_lines_fail(log: NoteSigner) -> None:
    body = checkpoint_body()
    text = sign_note(body, log)
    sig_block = text[len(body) :]
    lines = body.split(b"\n")[:-1]
    for index in range(len(lines)):
        for replacement in (lines[index] + b"x", lines[index][:-1], b"z" + lines[index][1:]):
            changed = list(lines)
            changed[index] = replacement
            tampered = b"".join(line + b"\n" for line in changed) + sig_block
            with pytest.raises(AuditVerificationError):
                open_note(tampered, [log.verifier()])


def test_tampered_signature_fails(log: NoteSigner) -> None:
    text = sign_note(b"hello\n", log)
    note = Note.parse(text)
    sig = note.signatures[0]
    for i in range(len(sig.value)):
        flipped = bytearray(sig.value)
        flipped[i] ^= 0x40
        tampered = Note(note.body, (Signature(sig.name, sig.key_id, bytes(flipped)),)).text()
        with pytest.raises(AuditVerificationError):
            open_note(tampered, [log.verifier()])
    # Truncated or extended signatures by the trusted key fail too.
    for value in (sig.value[:-1], sig.value + b"\x00"):
        tampered = Note(note.body, (Signature(sig.name, sig.key_id, value),)).text()
        with pytest.raises(AuditVerificationError):
            open_note(tampered, [log.verifier()])


def test_swapped_names_fail() -> None:
    a, b = fixed_signer("alice"), fixed_signer("bob", bytes(range(2, 34)))
    body = b"hello\n"
    sa, sb = a.sign(body), b.sign(body)
    swapped = Note(
        body,
        (Signature("bob", a.key_id, sa), Signature("alice", b.key_id, sb)),
    ).text()
    # With the names swapped neither line matches a trusted (name, key id): nothing verifies.
    with pytest.raises(AuditVerificationError, match="trusted"):
        open_note(swapped, [a.verifier(), b.verifier()])
    # Swapping the signatures between the lines is caught as a failing known signature.
    crossed = Note(body, (Signature("alice", a.key_id, sb), Signature("bob", b.key_id, sa)))
    with pytest.raises(AuditVerificationError, match="does not verify"):
        open_note(crossed.text(), [a.verifier(), b.verifier()])


def test_duplicate_signature_lines_are_malformed(log: NoteSigner) -> None:
    text = sign_note(b"hello\n", log)
    line = text[len(b"hello\n\n") :]
    with pytest.raises(AuditVerificationError, match="two signature lines"):
        Note.parse(text + line)
    # Same (name, key id) with a different value: Go would check only the first line.
    other = Signature(log.name, log.key_id, b"\x00" * 64).line()
    with pytest.raises(AuditVerificationError, match="two signature lines"):
        open_note(text + other, [log.verifier()])
    with pytest.raises(InvalidInput):
        Note(b"hello\n", (Note.parse(text).signatures[0],) * 2)


def test_malformed_notes_are_refused(log: NoteSigner) -> None:
    text = sign_note(b"hello\nworld\n", log)
    body, sig_line = text.split(b"\n\n")
    sig_line = sig_line[:-1]
    name_and_sig = sig_line[len("— ".encode()) :]
    bad = [
        b"",
        body + b"\n",  # no signatures
        body + b"\n\n",  # blank line but no signature lines
        body + b"\n" + sig_line + b"\n",  # no blank line
        body + b"\n\n" + sig_line,  # last line not ending in a newline
        body + b"\n\n" + sig_line + b"\n\n",  # trailing blank line
        body + b"\n\n" + sig_line + b"\nUnexpected line.\n",
        body + b"\n\n-- " + name_and_sig + b"\n",  # ASCII instead of an em dash
        body + b"\n\n" + "– ".encode() + name_and_sig + b"\n",  # en dash
        body + b"\n\n" + "—".encode() + name_and_sig + b"\n",  # no space after the dash
        body + b"\n\n" + "—  ".encode() + name_and_sig + b"\n",  # two spaces
        body + b"\n\n" + sig_line + b" \n",  # trailing space
        body + b"\n\n" + sig_line.replace(b"=", b"") + b"\n",  # unpadded base64
        body + b"\n\n" + sig_line[:-4] + b"!!!!\n",  # not base64
        body + b"\n\n" + "— ".encode() + b" " + name_and_sig + b"\n",  # empty name
        body + b"\n\n" + "— ".encode() + ORIGIN.encode() + b" AAAAAA==\n",  # 4 bytes only
        body.replace(b"\n", b"\r\n") + b"\r\n\r\n" + sig_line + b"\r\n",  # CRLF
        b"\x01" + text,
        b"\xff" + text,
        text.replace(b"hello", b"h\xc3llo"),  # invalid UTF-8
        text.replace(b"hello", b"he\x00lo"),
        text.replace(b"hello", b"he\tlo"),
    ]
    for candidate in bad:
        with pytest.raises(AuditVerificationError):
            Note.parse(candidate)
        with pytest.raises(AuditVerificationError):
            open_note(candidate, [log.verifier()])


def test_non_canonical_base64_is_refused(log: NoteSigner) -> None:
    text = sign_note(b"hello\n", log)
    encoded = text.rsplit(b" ", 1)[1][:-1]
    # 68 bytes encode with one '=' pad: the last data character carries 2 unused bits.
    assert encoded.endswith(b"=") and not encoded.endswith(b"==")
    last = encoded[-2:-1]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = bytes([alphabet[alphabet.index(last) ^ 1]])
    assert base64.b64decode(encoded[:-2] + twin + b"=") == base64.b64decode(encoded)
    with pytest.raises(AuditVerificationError):
        Note.parse(text.replace(encoded, encoded[:-2] + twin + b"="))


def test_signature_count_and_size_caps(log: NoteSigner) -> None:
    text = sign_note(b"hello\n", log)
    lines = b"".join(
        Signature(f"w{i}", b"\x00\x00\x00\x00", b"\x01" * 64).line() for i in range(100)
    )
    # 101 lines (the real one plus 100 unknown ones) is too many; 100 is fine.
    with pytest.raises(AuditVerificationError, match="more than 100"):
        open_note(text + lines, [log.verifier()])
    open_note(text + lines[: lines.index(b"w99") - len("— ".encode())], [log.verifier()])
    big_body = b"a" * (MAX_NOTE_BYTES - 10) + b"\n"
    with pytest.raises(AuditVerificationError, match="larger"):
        Note.parse(big_body + b"\n" + text[len(b"hello\n\n") :])
    with pytest.raises(InvalidInput):
        sign_note(b"a" * MAX_NOTE_BYTES + b"\n", log)


def test_sign_note_refuses_bad_bodies(log: NoteSigner) -> None:
    for body in (b"", b"no newline", b"bad\x00\n", b"\xff\n", b"cosignature/v1\ntime 1\n"):
        with pytest.raises(InvalidInput):
            sign_note(body, log)


def test_add_signature(log: NoteSigner, witness: NoteSigner) -> None:
    body = checkpoint_body()
    text = sign_note(body, log)
    cosig = cosign(body, witness, 1700000000)
    with_cosig = add_signature(text, cosig.name, cosig.key_id, cosig.value)
    assert with_cosig.startswith(text)
    assert with_cosig == text + cosig.line()
    # Idempotent for the identical line, refused for a different value.
    assert add_signature(with_cosig, cosig.name, cosig.key_id, cosig.value) == with_cosig
    later = cosign(body, witness, 1700000001)
    with pytest.raises(InvalidInput):
        add_signature(with_cosig, later.name, later.key_id, later.value)
    with pytest.raises(InvalidInput):
        add_signature(text, "bad name", cosig.key_id, cosig.value)
    with pytest.raises(InvalidInput):
        add_signature(text, cosig.name, b"\x00" * 3, cosig.value)
    with pytest.raises(AuditVerificationError):
        add_signature(b"not a note", cosig.name, cosig.key_id, cosig.value)


# --------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoint_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 20852163, ROOT, ("ext one", "ext two"))
    body = cp.body()
    assert body == (
        f"{ORIGIN}\n20852163\n{base64.b64encode(ROOT).decode()}\next one\next two\n".encode()
    )
    assert Checkpoint.parse(body) == cp
    assert Checkpoint.parse(Checkpoint(ORIGIN, 0, ROOT).body()).size == 0
    assert Checkpoint.parse(Checkpoint(ORIGIN, 2**64 - 1, ROOT).body()).size == 2**64 - 1


def test_c2sp_example_checkpoint_parses() -> None:
    body = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.parse(body)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.body() == body


ROOT_B64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(b"\xff" * 32).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n007\n{ROOT_B64}\n",  # leading zeros
        f"{ORIGIN}\n00\n{ROOT_B64}\n",
        f"{ORIGIN}\n-1\n{ROOT_B64}\n",  # negative
        f"{ORIGIN}\n+1\n{ROOT_B64}\n",
        f"{ORIGIN}\n1_000\n{ROOT_B64}\n",
        f"{ORIGIN}\n 1\n{ROOT_B64}\n",
        f"{ORIGIN}\n١\n{ROOT_B64}\n",  # a non-ASCII digit
        f"{ORIGIN}\n{2**64}\n{ROOT_B64}\n",  # beyond uint64
        f"{ORIGIN}\n\n{ROOT_B64}\n",
        f"{ORIGIN}\n1\nnot base64!\n",  # non-base64 root
        f"{ORIGIN}\n1\n{ROOT_B64.rstrip('=')}\n",  # unpadded
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # wrong root length
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",
        f"{ORIGIN}\n1\n{URLSAFE_ROOT}\n",  # URL alphabet
        f"{ORIGIN}\n1\n",  # missing lines
        f"{ORIGIN}\n",
        f"{ORIGIN}\n1\n{ROOT_B64}",  # no final newline
        f"{ORIGIN}\n1\n{ROOT_B64}\n\n",  # empty extension line
        f"{ORIGIN}\n1\n{ROOT_B64}\next\n\n",
        f"\n1\n{ROOT_B64}\n",  # empty origin
        f" {ORIGIN}\n1\n{ROOT_B64}\n",  # leading space
        f"{ORIGIN} \n1\n{ROOT_B64}\n",
        f"cosignature/v1\n1\n{ROOT_B64}\n",  # reserved origin prefix
        f"cosignature/anything\n1\n{ROOT_B64}\n",
        f"{ORIGIN}\r\n1\n{ROOT_B64}\n",
    ],
)
def test_checkpoint_parse_is_strict(body: str) -> None:
    with pytest.raises(AuditVerificationError):
        Checkpoint.parse(body.encode())


def test_checkpoint_constructor_is_strict() -> None:
    for args in (
        ("", 1, ROOT),
        ("cosignature/v1", 1, ROOT),
        (ORIGIN, -1, ROOT),
        (ORIGIN, 2**64, ROOT),
        (ORIGIN, True, ROOT),
        (ORIGIN, 1, ROOT[:31]),
        (ORIGIN + "\n", 1, ROOT),
    ):
        with pytest.raises(InvalidInput):
            Checkpoint(*args)
    with pytest.raises(InvalidInput):
        Checkpoint(ORIGIN, 1, ROOT, ("",))
    with pytest.raises(InvalidInput):
        Checkpoint(ORIGIN, 1, ROOT, ("a\nb",))


def test_open_checkpoint(log: NoteSigner, witness: NoteSigner) -> None:
    body = checkpoint_body(42)
    text = sign_note(body, log)
    cp, note = open_checkpoint(text, log.verifier(), ORIGIN)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 42, ROOT)
    assert note.body == body
    assert open_checkpoint(text, log.verifier())[0] == cp
    with pytest.raises(AuditVerificationError, match="origin"):
        open_checkpoint(text, log.verifier(), "another.example/log")
    # A checkpoint signed only by someone else (here the witness's note key) is refused.
    with pytest.raises(AuditVerificationError):
        open_checkpoint(sign_note(body, witness), log.verifier())
    with pytest.raises(AuditVerificationError):
        open_checkpoint(sign_note(b"not a checkpoint\n", log), log.verifier())
    # Cosignature lines do not disturb the log's signature.
    cosig = cosign(body, witness, 1700000000)
    cosigned = add_signature(text, cosig.name, cosig.key_id, cosig.value)
    assert open_checkpoint(cosigned, log.verifier(), ORIGIN)[0] == cp


# --------------------------------------------------------------------------------------------
# Cosignatures


def test_cosign_known_answer(witness: NoteSigner) -> None:
    body = checkpoint_body(20852163)
    timestamp = 1679315147
    sig = cosign(body, witness, timestamp)
    # Rebuilt by hand from tlog-cosignature, with the raw key rather than the module.
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    public = private.public_key().public_bytes_raw()
    message = b"cosignature/v1\ntime 1679315147\n" + body
    assert sig.name == "witness.example/w1"
    assert sig.key_id == expected_key_id("witness.example/w1", 0x04, public)
    assert sig.value == timestamp.to_bytes(8, "big") + private.sign(message)
    assert len(sig.value) == 72
    verifier = CosignatureVerifier.from_vkey(witness.cosigner_vkey())
    assert verify_cosignature(body, sig, verifier) == timestamp


def test_cosignature_layout_matches_transparency_dev() -> None:
    line = b"hello\n\n" + "— w ".encode() + TD_COSIGNATURE.encode() + b"\n"
    sig = Note.parse(line).signatures[0]
    assert len(sig.value) == 72
    assert int.from_bytes(sig.value[:8], "big") == TD_COSIGNATURE_TIME


def test_cosignature_checks(log: NoteSigner, witness: NoteSigner) -> None:
    body = checkpoint_body(10)
    verifier = witness.cosignature_verifier()
    sig = cosign(body, witness, 1700000000)
    assert verify_cosignature(body, sig, verifier) == 1700000000
    # Over another checkpoint.
    with pytest.raises(AuditVerificationError):
        verify_cosignature(checkpoint_body(11), sig, verifier)
    with pytest.raises(AuditVerificationError):
        verify_cosignature(Checkpoint(ORIGIN, 10, ROOT, ("ext",)).body(), sig, verifier)
    # With another timestamp in the value.
    for ts in (1700000001, 0, 2**63 - 1):
        moved = Signature(sig.name, sig.key_id, ts.to_bytes(8, "big") + sig.value[8:])
        with pytest.raises(AuditVerificationError):
            verify_cosignature(body, moved, verifier)
    beyond = Signature(sig.name, sig.key_id, (2**63).to_bytes(8, "big") + sig.value[8:])
    with pytest.raises(AuditVerificationError, match="2\\^63"):
        verify_cosignature(body, beyond, verifier)
    # By another witness, or labelled with another name.
    other = NoteSigner.generate("witness.example/w2").cosignature_verifier()
    with pytest.raises(AuditVerificationError):
        verify_cosignature(body, sig, other)
    with pytest.raises(AuditVerificationError):
        verify_cosignature(body, Signature("w2", sig.key_id, sig.value), verifier)
    with pytest.raises(InvalidInput):
        cosign(body, witness, -1)
    with pytest.raises(InvalidInput):
        cosign(body, witness, 2**63)
    with pytest.raises(AuditVerificationError):
        cosign(b"not a checkpoint\n", witness, 1)


def test_note_signature_is_not_a_cosignature(witness: NoteSigner) -> None:
    body = checkpoint_body(10)
    verifier = witness.cosignature_verifier()
    note_sig = Note.parse(sign_note(body, witness)).signatures[0]
    assert note_sig.key_id == witness.key_id != verifier.key_id
    # Under its own key id it is not a line of this cosigner at all.
    with pytest.raises(AuditVerificationError):
        verify_cosignature(body, note_sig, verifier)
    # Relabelled with the cosigner key id it has the wrong length ...
    relabelled = Signature(note_sig.name, verifier.key_id, note_sig.value)
    with pytest.raises(AuditVerificationError):
        verify_cosignature(body, relabelled, verifier)
    # ... and with a timestamp prepended it signs the wrong message.
    stamped = Signature(note_sig.name, verifier.key_id, (0).to_bytes(8, "big") + note_sig.value)
    with pytest.raises(AuditVerificationError):
        verify_cosignature(body, stamped, verifier)
    # The witness's cosignature is ignored by note verification (type 0x04 key id) ...
    cosig = cosign(body, witness, 5)
    only_cosig = Note(body, (cosig,)).text()
    with pytest.raises(AuditVerificationError, match="trusted"):
        open_note(only_cosig, [witness.verifier()])
    # ... and cannot be recast as a note signature over the cosigned message.
    message = b"cosignature/v1\ntime 5\n" + body
    recast = Note(message, (Signature(witness.name, witness.key_id, cosig.value[8:]),)).text()
    NoteVerifier.from_vkey(witness.vkey()).verify(message, cosig.value[8:])  # it is valid Ed25519
    with pytest.raises(AuditVerificationError, match="cosignature/"):
        open_note(recast, [witness.verifier()])


def test_cosignatures_on_a_note(log: NoteSigner, witness: NoteSigner) -> None:
    body = checkpoint_body(7)
    w2 = NoteSigner.generate("witness.example/w2")
    stranger = NoteSigner.generate("witness.example/stranger")
    text = sign_note(body, log)
    for signer, ts in ((witness, 100), (w2, 200), (stranger, 300)):
        sig = cosign(body, signer, ts)
        text = add_signature(text, sig.name, sig.key_id, sig.value)
    _, note = open_checkpoint(text, log.verifier(), ORIGIN)
    trusted = [witness.cosignature_verifier(), w2.cosignature_verifier()]
    assert cosignatures(note, trusted) == {"witness.example/w1": 100, "witness.example/w2": 200}
    assert cosignatures(note, []) == {}
    # A trusted witness line that fails to verify raises: here w2's signature for time 201
    # presented with the timestamp 200.
    wrong = cosign(body, w2, 201).value[8:]
    forged = Note(
        note.body,
        tuple(
            Signature(s.name, s.key_id, s.value[:8] + wrong) if s.name == w2.name else s
            for s in note.signatures
        ),
    )
    with pytest.raises(AuditVerificationError):
        cosignatures(forged, trusted)
    assert cosignatures(forged, trusted[:1]) == {"witness.example/w1": 100}
    # A cosignature copied onto another checkpoint fails too.
    moved = Note(checkpoint_body(8), note.signatures[1:])
    with pytest.raises(AuditVerificationError):
        cosignatures(moved, trusted)


def test_ambiguous_trust_configuration_is_refused(log: NoteSigner) -> None:
    text = sign_note(b"hello\n", log)
    impostor = NoteVerifier.from_public_key(log.name, b"\x07" * 32)
    object.__setattr__(impostor, "key_id", log.key_id)  # forge a (name, key id) collision
    with pytest.raises(InvalidInput):
        open_note(text, [log.verifier(), impostor])
    # The same key listed twice is harmless.
    assert open_note(text, [log.verifier(), log.verifier()])[1] == [ORIGIN]


# --------------------------------------------------------------------------------------------
# Untrusted input never crashes the parser


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_verification_errors(data: bytes) -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    for call in (Note.parse, Checkpoint.parse, lambda d: open_note(d, [verifier])):
        try:
            call(data)
        except AuditVerificationError:
            pass


_NOTE_ALPHABET = st.sampled_from(
    [b"\n", b"\n\n", "— ".encode(), b" ", b"+", b"=", b"A", b"/", b"0", b"x", "—".encode(), b"\xe2"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_NOTE_ALPHABET, max_size=60).map(b"".join))
def test_note_like_bytes_only_raise_verification_errors(data: bytes) -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    for candidate in (data, GO_TEXT + b"\n" + data, GO_TEXT + b"\n" + PETER_SIG + data):
        try:
            open_note(candidate, [verifier])
        except AuditVerificationError:
            pass


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(GO_NOTE) - 1),
    st.sampled_from(["replace", "insert", "delete"]),
    st.integers(min_value=0, max_value=255),
)
def test_single_byte_changes_never_verify(position: int, how: str, byte: int) -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    changed = bytearray(GO_NOTE)
    if how == "replace":
        changed[position] = byte
    elif how == "insert":
        changed.insert(position, byte)
    else:
        del changed[position]
    if bytes(changed) == GO_NOTE:
        return
    try:
        note, _ = open_note(bytes(changed), [verifier])
    except AuditVerificationError:
        return
    # The only edits that still verify are those inside Enoch's (unknown) line.
    assert note.body == GO_TEXT
    assert position >= len(GO_TEXT) + 1 + len(PETER_SIG)
