"""The engine's randomness: masks, decoys, garbling factors, flood noise, shifts and block
orders, from a fast cryptographically secure stream instead of one ``os.urandom`` call per
draw.

A search draws ~65,000 doubles per block (~0.5 MB): from ``os.urandom`` that cost ~1.4 ms
per block here (0.18 s of a 1M-record search). The stream is AES-256 in counter mode
(``cryptography``, AES-NI): ~20 us per 64 KB. Its key is fresh from ``os.urandom`` for
every refill of at most :data:`REFILL_BYTES` (1 MiB, about two blocks' worth), with the
counter starting at zero under each key, so no key ever encrypts more than one refill and
nothing of one refill can be computed from another (each has 256 bits of fresh OS
entropy); the outputs are as unpredictable from earlier queries as ``os.urandom``'s own,
which is what masks and shifts need (a seeded PRNG such as numpy's PCG64 is not a CSPRNG:
its state follows from a few outputs).

Processes and threads: the stream is per process and remembers the process id that filled
its buffer; a forked child (the sharded engine's workers are forked) drops the buffer it
inherited and refills under its own fresh key (Ray actors start with none). A lock makes
draws from several threads safe (each value is handed out once).

Doubles are uniform in [0, 1) with 53 random bits (``(word >> 11) * 2^-53``), as before.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedmatch.errors import HEError

__all__ = ["REFILL_BYTES", "SecureStream", "normal", "random_below", "stream", "uniform"]

REFILL_BYTES = 1 << 20
_NONCE = bytes(16)


class SecureStream:
    """Random bytes from AES-256-CTR keystreams, each keyed from ``os.urandom(32)`` and
    used for at most one refill (see the module doc)."""

    def __init__(self, refill_bytes: int = REFILL_BYTES) -> None:
        self._refill = refill_bytes
        self._lock = threading.Lock()
        self._buffer = np.zeros(0, dtype=np.uint8)
        self._position = 0
        self._pid = os.getpid()

    @staticmethod
    def _keystream(count: int) -> npt.NDArray[np.uint8]:
        encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(_NONCE)).encryptor()
        data = encryptor.update(bytes(count)) + encryptor.finalize()
        return np.frombuffer(data, dtype=np.uint8)

    def bytes_array(self, count: int) -> npt.NDArray[np.uint8]:
        """``count`` fresh random bytes (a read-only array; each byte handed out once)."""
        if count < 0:
            raise HEError("a negative byte count")
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not replay its parent's buffered bytes.
                self._buffer, self._position, self._pid = self._buffer[:0], 0, os.getpid()
            if count > self._refill:
                return self._keystream(count)
            left = self._buffer.size - self._position
            if count > left:
                self._buffer, self._position = self._keystream(self._refill), 0
            out = self._buffer[self._position : self._position + count]
            self._position += count
            return out

    def words(self, n: int) -> npt.NDArray[np.uint64]:
        """``n`` uniform 64-bit words."""
        return self.bytes_array(8 * n).view("<u8").astype(np.uint64, copy=False)

    def uniform(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` uniform doubles in [0, 1), 53 random bits each."""
        scaled = (self.words(n) >> np.uint64(11)) * (1.0 / (1 << 53))
        return scaled.astype(np.float64, copy=False)

    def normal(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` standard normal doubles (Box-Muller on two uniforms)."""
        u1, u2 = 1.0 - self.uniform(n), self.uniform(n)  # u1 in (0, 1]: log(u1) is finite
        out: npt.NDArray[np.float64] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        return out

    def below(self, n: int) -> int:
        """A uniform integer in [0, n) (64-bit word mod n: bias below n / 2^64)."""
        if n < 1:
            raise HEError("the bound must be positive")
        return int(self.words(1)[0]) % n


_STREAM = SecureStream()


def stream() -> SecureStream:
    """This process's stream (see the module doc on forks)."""
    return _STREAM


def uniform(n: int) -> npt.NDArray[np.float64]:
    return _STREAM.uniform(n)


def normal(n: int) -> npt.NDArray[np.float64]:
    return _STREAM.normal(n)


def random_below(n: int) -> int:
    return _STREAM.below(n)
