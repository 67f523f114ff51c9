"""The requester's key pair: the only module that holds a secret key, generates keys or
decrypts. A requesting authority generates its keys locally; only
:meth:`RequesterKeys.public_bundle` ever leaves it (a node opens it with
:func:`fedmatch.he.keys.open_key_bundle`). No node or coordinator module imports this one
(``tests/unit/test_imports.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.domain import PROBE_NORM_TOLERANCE
from fedmatch.errors import HEError, ImplausibleResult, InvalidInput
from fedmatch.he import resultfmt, sealfmt, sealio, sealmem, uniform
from fedmatch.he.keys import KeyBundle, open_key_bundle
from fedmatch.he.layout import replicate_probe
from fedmatch.he.params import DEFAULT_PARAM_SET, ParamSet

__all__ = [
    "MAX_BLOCK_POSITIVES",
    "MAX_TINY_FRACTION",
    "PROBE_NORM_TOLERANCE",
    "RequesterKeys",
]

# What an honest node's result block can hold (fedmatch.he.engine): every slot is
# r * (s - t) + noise, r log-uniform in [2^lo, 2^hi] (the mask bits), |s - t| < 2, the noise
# below 2^(flood_bits + 1); an excluded row's decoy is built the same way. So:
# - no magnitude reaches 2^(hi + 1.5) (2^47 * 2 = 2^48, plus noise);
# - a magnitude below 2^(lo - 4) needs r * |s - t| < 2^(lo - 4): a fraction ~0.011 * f(t)
#   of the rows, f the density of scores at the threshold (a few percent even at thresholds
#   far below any in use); an unmasked answer (the probe sent back, Enc(q - c)) has every
#   magnitude below 1. More than half the slots that small is not a masked result;
# - a block of 8,192 records holding more than 32 records of the person searched is not a
#   register, it is a node setting every slot positive (a probe's own slots, Enc(q - c), give
#   64 positives per probe component above c).
# A block outside these bounds is refused (ImplausibleResult) and its node's candidates
# dropped by the requester. This bounds, and does not close, what a malicious node can do:
# it can still make up to 32 plausible-looking positives per block at slots of its choosing;
# what closes that is releasing details only for real matches (issue 15, not built yet).
MAX_BLOCK_POSITIVES = 32
MAX_TINY_FRACTION = 0.5
_TINY_BELOW_MASK_BITS = 4
_HUGE_ABOVE_MASK_BITS = 1.5


def _secret_words(params: ParamSet, secret: seal.SecretKey) -> npt.NDArray[np.uint64]:
    """The secret key's NTT-form residues, one row per modulus of the key level."""
    body, _ = sealfmt.unpack(sealio.to_bytes(secret), "secret key", 1 << 26)
    _, words = sealfmt.plaintext_words(body, "secret key")
    limbs = len(uniform.key_moduli(params))
    return words.reshape(limbs, params.poly_modulus_degree).copy()


class RequesterKeys:
    """A requesting authority's key pair. The secret key never leaves this object except
    through :meth:`private_bundle`, for the authority's own key file."""

    def __init__(
        self,
        params: ParamSet,
        secret_key: seal.SecretKey,
        public: tuple[seal.PublicKey, bytes, bytes, bytes] | None = None,
    ) -> None:
        """``public`` is (public key, its bytes, rotation-key bytes, relinearization-key
        bytes) loaded from a key file; without it, fresh public, rotation and
        relinearization keys are derived from the secret key."""
        self.params = params
        ctx = params.context()
        self._ctx = ctx
        self._secret = secret_key
        self._secret_words = _secret_words(params, secret_key)
        # Its ternary coefficients, for decrypting compact result blocks; HEError for a key
        # whose canonical norm the format's error bound does not cover (fedmatch.he.resultfmt).
        self._secret_poly = resultfmt.secret_coefficients(params, self._secret_words)
        self._secret_spectrum = resultfmt.secret_spectrum(self._secret_poly)
        if public is None:
            public = self._new_public_keys()
        self._public = public[0]
        self._bundle = KeyBundle(
            param_set=params.name,
            parms=sealio.to_bytes(params.parms()),
            public_key=public[1],
            galois_keys=public[2],
            relin_keys=public[3],
        )
        self._encoder = seal.CKKSEncoder(ctx)
        self._encryptor = seal.Encryptor(ctx, self._public, secret_key)
        self._decryptor = seal.Decryptor(ctx, secret_key)
        # Per scale, the members SEAL's save writes for a fresh probe ciphertext (see
        # _probe_members).
        self._probe_templates: dict[float, tuple[bytes, tuple[int, int]]] = {}

    def _new_public_keys(self) -> tuple[seal.PublicKey, bytes, bytes, bytes]:
        """Fresh public, Galois and relinearization keys with the federation's uniform parts (see
        fedmatch.he.uniform): SEAL makes them, then each key's uniform part is swapped for
        the expanded one and its first part adjusted so that it still encrypts under this
        secret (``k0 + (a' - a) * s``: the same error, the same message)."""
        params, ctx = self.params, self._ctx
        keygen = seal.KeyGenerator(ctx, self._secret)
        pk, galois, relin = seal.PublicKey(), seal.GaloisKeys(), seal.RelinKeys()
        keygen.create_public_key(pk)
        keygen.create_galois_keys(list(params.galois_elements()), galois)
        keygen.create_relin_keys(relin)
        moduli = uniform.key_moduli(params)
        body, version = sealfmt.unpack(sealio.to_bytes(pk), "public key", 1 << 30)
        key = sealfmt.ciphertext_at(body, 0, "public key")
        self._rebind(
            key.data,
            uniform.expand(uniform.public_key_label(params), moduli, key.data.shape[2]),
            moduli,
        )
        pk_bytes = sealfmt.pack(body, version)
        body, version = sealfmt.unpack(sealio.to_bytes(galois), "rotation keys", 1 << 30)
        for index, j, key in sealfmt.kswitch_keys(body, "rotation keys"):
            label = uniform.galois_label(params, index, j)
            self._rebind(key.data, uniform.expand(label, moduli, key.data.shape[2]), moduli)
        galois_bytes = sealfmt.pack(body, version)
        body, version = sealfmt.unpack(sealio.to_bytes(relin), "relinearization keys", 1 << 30)
        for _, j, key in sealfmt.kswitch_keys(body, "relinearization keys"):
            label = uniform.relin_label(params, j)
            self._rebind(key.data, uniform.expand(label, moduli, key.data.shape[2]), moduli)
        relin_bytes = sealfmt.pack(body, version)
        pk = seal.PublicKey()
        sealio.load_bytes(lambda p: pk.load(ctx, p), pk_bytes, "public key")
        return pk, pk_bytes, galois_bytes, relin_bytes

    def _rebind(
        self, data: npt.NDArray[np.uint64], uniform_part: npt.NDArray[np.uint64], moduli: list[int]
    ) -> None:
        """``(c0, c1)`` in place to ``(c0 + (c1 - a) * s, a)``, limb by limb (NTT form)."""
        for limb, q in enumerate(moduli):
            if q < 1 << 32:
                # Products of words below 2^32 fit uint64: vectorized, where Python's
                # integers took ~6 ms per ciphertext of the kernel set (two per probe).
                m = np.uint64(q)
                diff = (data[1, limb] + (m - uniform_part[limb])) % m
                product = diff * self._secret_words[limb].astype(np.uint64) % m
                data[0, limb] = (data[0, limb] + product) % m
                data[1, limb] = uniform_part[limb]
                continue
            c0, c1 = data[0, limb].astype(object), data[1, limb].astype(object)
            s = self._secret_words[limb].astype(object)
            a = uniform_part[limb].astype(object)
            data[0, limb] = np.array((c0 + (c1 - a) * s) % q, dtype=np.uint64)
            data[1, limb] = uniform_part[limb]

    def __repr__(self) -> str:
        return f"RequesterKeys(param_set={self.params.name!r}, digest={self.key_id[:16]})"

    @classmethod
    def generate(cls, params: ParamSet = DEFAULT_PARAM_SET) -> RequesterKeys:
        """Fresh keys. A secret whose canonical norm exceeds the compact result format's
        bound (probability ~2^-30, fedmatch.he.resultfmt) is redrawn."""
        while True:
            secret = seal.KeyGenerator(params.context()).secret_key()
            try:
                return cls(params, secret)
            except HEError as exc:
                if "canonical norm" not in str(exc):
                    raise

    @classmethod
    def from_private_bundle(cls, bundle: KeyBundle) -> RequesterKeys:
        """Reload a key file; its public and rotation keys are kept, so the key id (the
        bundle digest) is stable across loads."""
        if not bundle.secret_key:
            raise HEError("key file holds no secret key")
        evaluation = open_key_bundle(
            KeyBundle(
                bundle.param_set,
                bundle.parms,
                bundle.public_key,
                bundle.galois_keys,
                relin_keys=bundle.relin_keys,
            )
        )
        params = evaluation.params
        secret = seal.SecretKey()
        sealio.load_bytes(
            lambda p: secret.load(params.context(), p), bundle.secret_key, "secret key"
        )
        public = (evaluation.public_key, bundle.public_key, bundle.galois_keys, bundle.relin_keys)
        keys = cls(params, secret, public)
        keys._check_pair()
        return keys

    def _check_pair(self) -> None:
        # A public key from another key pair would encrypt probes nobody here can decrypt.
        plain = seal.Plaintext()
        self._encoder.encode([0.5] * 4, self._ctx.first_parms_id(), self.params.query_scale, plain)
        ct = seal.Ciphertext()
        self._encryptor.encrypt(plain, ct)
        out = seal.Plaintext()
        self._decryptor.decrypt(ct, out)
        if abs(self._encoder.decode_double(out)[0] - 0.5) > 1e-3:
            raise HEError("key file's public key does not belong to its secret key")

    @property
    def key_id(self) -> str:
        return self._bundle.digest()

    def public_bundle(self) -> KeyBundle:
        return self._bundle

    def private_bundle(self) -> KeyBundle:
        return KeyBundle(
            param_set=self._bundle.param_set,
            parms=self._bundle.parms,
            public_key=self._bundle.public_key,
            galois_keys=self._bundle.galois_keys,
            secret_key=sealio.to_bytes(self._secret),
            relin_keys=self._bundle.relin_keys,
        )

    def encrypt_probe(
        self, template: npt.NDArray[np.floating], commitment: bytes = bytes(32)
    ) -> bytes:
        """Encrypt a unit-norm template in the replicated layout, in the form a probe
        travels in (fedmatch.he.uniform), carrying ``commitment`` to the template
        (fedmatch.protocol.opening; the default, all zero, opens to nothing: such a probe's
        hits can never be resolved)."""
        vec = np.asarray(template, dtype=np.float64)
        if vec.ndim != 1:
            raise InvalidInput("probe template must be a one-dimensional vector")
        if not np.all(np.isfinite(vec)):
            raise InvalidInput("probe template has non-finite values")
        # A longer probe would lower the federation's threshold for itself (s - t with s
        # scaled up): an honest requester never sends one. The message names no value.
        if abs(float(np.linalg.norm(vec)) - 1.0) > PROBE_NORM_TOLERANCE:
            raise InvalidInput(
                f"probe template must have unit norm (within {PROBE_NORM_TOLERANCE})"
            )
        # Exactly unit norm: the node's norm check (fedmatch.he.engine) then sees only
        # the encryption's own noise.
        vec = vec / np.linalg.norm(vec)
        return self._encrypt_slots(replicate_probe(vec, self.params.slots), commitment)

    def _encrypt_slots(
        self,
        slots: npt.NDArray[np.floating] | npt.NDArray[np.complexfloating],
        commitment: bytes = bytes(32),
        norm_copy: npt.NDArray[np.floating] | npt.NDArray[np.complexfloating] | None = None,
    ) -> bytes:
        """Any slot vector, encrypted in the form a probe travels in: the probe at the
        query scale and its copy at the norm scale (``norm_copy``, default the same
        slots). Private: the library sends only what encrypt_probe checked; tests use it
        (and ``norm_copy``) to play a hostile requester."""
        seed = uniform.new_probe_seed()
        params = self.params
        query = self._seeded(slots, params.query_scale, uniform.probe_label(seed))
        copy = slots if norm_copy is None else norm_copy
        norm = self._seeded(copy, params.norm_scale, uniform.norm_copy_label(seed))
        return uniform.probe_envelope(seed, commitment, query, norm)

    def _seeded(
        self,
        slots: npt.NDArray[np.floating] | npt.NDArray[np.complexfloating],
        scale: float,
        label: bytes,
    ) -> bytes:
        """``slots`` encrypted at ``scale``, rebound to the uniform part the node expands
        from ``label`` (fedmatch.he.uniform), sent with that part empty (it compresses
        away)."""
        plain = seal.Plaintext()
        parms_id = self._ctx.first_parms_id()
        self._encoder.encode(np.asarray(slots).tolist(), parms_id, scale, plain)
        ct = seal.Ciphertext()
        self._encryptor.encrypt_symmetric(plain, ct)
        moduli = uniform.data_moduli(self.params)
        body, version = self._probe_members(ct)
        polys = sealfmt.ciphertext_at(body, 0, "probe ciphertext")
        self._rebind(polys.data, uniform.expand(label, moduli, polys.data.shape[2]), moduli)
        polys.data[1] = 0
        return sealfmt.pack(body, version)

    def _probe_members(self, ct: seal.Ciphertext) -> tuple[bytearray, tuple[int, int]]:
        """``ct``'s serialized members, uncompressed, and their version, as SEAL's ``save``
        writes them. Every fresh probe ciphertext at one scale has the same fixed fields
        (parameters, NTT form, size, degree, moduli, scale): SEAL writes them once per scale
        and later ciphertexts copy them, with their words read from memory
        (:mod:`fedmatch.he.sealmem`). SEAL's save goes through a file and zstd, and the
        members then had to be decompressed again: ~3.5 ms a ciphertext, two a probe."""
        template = self._probe_templates.get(ct.scale)
        if template is None:
            body, version = sealfmt.unpack(sealio.to_bytes(ct), "probe ciphertext", 1 << 26)
            # Kept without this probe's words: only the fixed fields are reused.
            fields = bytearray(body)
            sealfmt.ciphertext_at(fields, 0, "probe ciphertext").data[:] = 0
            self._probe_templates[ct.scale] = (bytes(fields), version)
            return body, version
        fixed, version = template
        body = bytearray(fixed)
        polys = sealfmt.ciphertext_at(body, 0, "probe ciphertext")
        shape = (ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree())
        if (
            polys.data.shape != shape
            or polys.parms_id != bytes(np.asarray(ct.parms_id(), dtype="<u8"))
            or polys.ntt_form != ct.is_ntt_form()
        ):
            raise HEError("a probe ciphertext does not have the shape of the earlier ones")
        sealmem.read_ciphertext(ct, polys.data)
        return body, version

    def decrypt_matches(self, ciphertext: bytes) -> npt.NDArray[np.bool_]:
        """Decrypt one result block, in the compact format of :mod:`fedmatch.he.resultfmt`
        (anything else, a SEAL ciphertext included, is HEError): ``True`` at every position
        whose masked value is positive (score at or above the threshold). Positions
        0..slots-1 are the real parts, slots..2*slots-1 the imaginary parts. The magnitudes
        are dropped here, once checked against what an honest node's masks can produce
        (else ImplausibleResult, whose message holds no value): they are random by
        construction and nothing downstream may use them."""
        return self.decrypt_matches_many([ciphertext])[0]

    def decrypt_matches_many(self, ciphertexts: Sequence[bytes]) -> list[npt.NDArray[np.bool_]]:
        """:meth:`decrypt_matches` of every block of one answer, decrypted a few at a time
        (:func:`fedmatch.he.resultfmt.decrypt_many`); HEError or ImplausibleResult if any
        block is bad (the message says which): an answer is used whole or not at all."""
        values = resultfmt.decrypt_many(
            ciphertexts, self.params, self._secret_poly, self._secret_spectrum
        )
        out: list[npt.NDArray[np.bool_]] = []
        for index, slots in enumerate(values):
            flat = np.concatenate([slots.real, slots.imag])
            positive = flat > 0
            try:
                self._check_plausible(flat, positive)
            except ImplausibleResult as exc:
                if len(ciphertexts) == 1:
                    raise
                raise ImplausibleResult(f"block {index}: {exc}") from None
            out.append(positive)
        return out

    def _check_plausible(
        self, flat: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]
    ) -> None:
        lo, hi = self.params.mask_bits
        magnitude = np.abs(flat)
        if int(positive.sum()) > MAX_BLOCK_POSITIVES:
            raise ImplausibleResult(
                f"result block has more than {MAX_BLOCK_POSITIVES} positive positions"
            )
        if not np.all(magnitude < 2.0 ** (hi + _HUGE_ABOVE_MASK_BITS)):
            raise ImplausibleResult("result block has values beyond the masks' range")
        if float(np.mean(magnitude < 2.0 ** (lo - _TINY_BELOW_MASK_BITS))) > MAX_TINY_FRACTION:
            raise ImplausibleResult("result block has values below the masks' range")

    def decrypt_values(self, ciphertext: bytes) -> npt.NDArray[np.complex128]:
        """The raw decrypted slots of a result block (compact format) or of a serialized
        SEAL ciphertext at any level: for tests that prove what a requester could learn
        from them (the masked magnitudes), never used by the lookup path."""
        if ciphertext[: len(resultfmt.FORMAT_TAG)] == resultfmt.FORMAT_TAG:
            return resultfmt.decrypt_slots(
                ciphertext, self.params, self._secret_poly, self._secret_spectrum
            )
        ct = seal.Ciphertext()
        sealio.load_bytes(lambda p: ct.load(self._ctx, p), ciphertext, "result ciphertext")
        plain = seal.Plaintext()
        self._decryptor.decrypt(ct, plain)
        return np.asarray(self._encoder.decode_complex(plain), dtype=np.complex128)
