"""The requester's key file: an ``HEKeyBundle`` with the secret key, mode 0600."""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf.message import DecodeError

from fedmatch.errors import InvalidInput
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import KeyBundle
from fedmatch.rpc.v1 import common_pb2

__all__ = ["load_keys", "save_keys"]


def save_keys(keys: RequesterKeys, path: Path) -> None:
    b = keys.private_bundle()
    msg = common_pb2.HEKeyBundle(
        he_param_set=b.param_set,
        parms=b.parms,
        public_key=b.public_key,
        galois_keys=b.galois_keys,
        secret_key=b.secret_key,
        relin_keys=b.relin_keys,
    )
    # Create with 0600 from the start: never a moment where the secret is world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode applies only to a new file: tighten an existing one before writing.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msg.SerializeToString())


def load_keys(path: Path) -> RequesterKeys:
    msg = common_pb2.HEKeyBundle()
    try:
        msg.ParseFromString(path.read_bytes())
    except (OSError, DecodeError):
        raise InvalidInput(f"key file {path.name} could not be read") from None
    return RequesterKeys.from_private_bundle(
        KeyBundle(
            msg.he_param_set,
            msg.parms,
            msg.public_key,
            msg.galois_keys,
            msg.secret_key,
            relin_keys=msg.relin_keys,
        )
    )
