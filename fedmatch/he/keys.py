"""Public key material: the bundle a requester registers and the validated keys a node uses.

The requester's key pair lives in :mod:`fedmatch.he.keypair`, which no node or coordinator
module imports; only :meth:`~fedmatch.he.keypair.RequesterKeys.public_bundle` ever leaves
it. A node turns a received bundle into :class:`EvaluationKeys` through
:func:`open_key_bundle`, which refuses a bundle carrying a secret key, an unknown parameter
set, parameters that differ from the named set, keys whose uniform parts are not the
federation's (:mod:`fedmatch.he.uniform`), or keys that do not load for that context.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property

import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import sealio, uniform
from fedmatch.he.params import ParamSet, get_param_set

__all__ = ["MAX_KEY_BUNDLE_BYTES", "EvaluationKeys", "KeyBundle", "open_key_bundle"]

# A bundle of the default set measures ~36 MB (46 Galois keys of ~790 KB and a 360 KB public
# key). It is sent once per key epoch, never with a query.
MAX_KEY_BUNDLE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class KeyBundle:
    """The container of HE key material, in the shape of the wire's ``HEKeyBundle``."""

    param_set: str
    parms: bytes
    public_key: bytes
    galois_keys: bytes
    secret_key: bytes = field(default=b"", repr=False)
    # For the node's homomorphic norm check of a probe (fedmatch.he.engine._norm_excess).
    relin_keys: bytes = b""

    def __repr__(self) -> str:
        # Never print key bytes, and say whether a secret key is present without showing it.
        return (
            f"KeyBundle(param_set={self.param_set!r}, digest={self.digest()[:16]}, "
            f"has_secret_key={bool(self.secret_key)})"
        )

    @property
    def size(self) -> int:
        return len(self.parms) + len(self.public_key) + len(self.galois_keys) + len(self.relin_keys)

    def digest(self) -> str:
        """SHA-256 over the public parts, length-prefixed: the key bundle's identity."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        # Computed once per bundle (its fields are immutable): ~27 ms over the ~47 MB of a
        # kernel-set bundle, which a requester's every lookup used to pay twice (its key id
        # on the probe and on the coordinator's record). cached_property writes the
        # instance's dict directly, which a frozen dataclass allows; it is no field, so
        # equality and replace() ignore it.
        h = hashlib.sha256(b"fedmatch.he.key-bundle.v2\x00")
        parts = (self.param_set.encode(), self.parms, self.public_key, self.galois_keys)
        for part in (*parts, self.relin_keys):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class EvaluationKeys:
    """Public material of one requester, validated for its parameter set."""

    params: ParamSet
    key_id: str
    galois_keys: seal.GaloisKeys
    public_key: seal.PublicKey
    relin_keys: seal.RelinKeys
    # The validated public bundle itself, for engines that hand keys to worker processes;
    # None in a process that runs the searches itself (see searching_copy).
    bundle: KeyBundle | None

    def searching_copy(self) -> EvaluationKeys:
        """What a process that runs the searches keeps: the loaded keys, not the bundle's
        bytes (the same material again: ~47 MB per requester key with the kernel set)."""
        return replace(self, bundle=None)

    def dispatching_copy(self) -> EvaluationKeys:
        """What a process that hands searches to worker processes keeps: the bundle (to
        send them) and the public key (decoy blocks); not the loaded rotation and
        relinearization keys (~80 MB per requester key with the kernel set), which only
        the workers use. A rotation attempted with this copy fails in SEAL (no key)."""
        if self.bundle is None:
            raise HEError("keys without their bundle cannot be handed to worker processes")
        return replace(self, galois_keys=seal.GaloisKeys(), relin_keys=seal.RelinKeys())


def open_key_bundle(bundle: KeyBundle) -> EvaluationKeys:
    """Validate a received bundle and load its keys, or raise HEError."""
    if bundle.secret_key:
        raise HEError("key bundle carries a secret key; refused (send public material only)")
    if bundle.size > MAX_KEY_BUNDLE_BYTES:
        raise HEError(f"key bundle exceeds {MAX_KEY_BUNDLE_BYTES} bytes")
    params = get_param_set(bundle.param_set)
    ctx = params.context()
    received = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    sealio.load_bytes(received.load, bundle.parms, "encryption parameters")
    mine = params.parms()
    if (
        received.scheme() != mine.scheme()
        or received.poly_modulus_degree() != mine.poly_modulus_degree()
        or [m.value() for m in received.coeff_modulus()]
        != [m.value() for m in mine.coeff_modulus()]
    ):
        raise HEError("encryption parameters differ from the named parameter set")
    # Before SEAL sees them: keys whose uniform parts a requester chose read the register
    # (fedmatch.he.uniform).
    if not bundle.relin_keys:
        raise HEError("key bundle lacks the relinearization keys (the node's norm check)")
    uniform.check_key_uniform_parts(
        params, bundle.public_key, bundle.galois_keys, bundle.relin_keys
    )
    public = seal.PublicKey()
    sealio.load_bytes(lambda p: public.load(ctx, p), bundle.public_key, "public key")
    galois = seal.GaloisKeys()
    sealio.load_bytes(lambda p: galois.load(ctx, p), bundle.galois_keys, "rotation keys")
    relin = seal.RelinKeys()
    sealio.load_bytes(lambda p: relin.load(ctx, p), bundle.relin_keys, "relinearization keys")
    missing = [e for e in params.galois_elements() if not galois.has_key(e)]
    if missing:
        raise HEError(f"rotation keys lack {len(missing)} of the rotations the search needs")
    return EvaluationKeys(
        params=params, key_id=bundle.digest(), galois_keys=galois, public_key=public,
        relin_keys=relin, bundle=bundle,
    )  # fmt: skip
