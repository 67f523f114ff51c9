"""Size bounds of the wire contract, in one place.

Sized from measured objects at the default parameter set (N = 8192): a seeded probe
ciphertext is ~117 KB, a key bundle ~1.1 MB, a result block ~131 KB of ciphertext plus 64 KB
of handles per 4,096 records. Nothing is "unlimited".
"""

from __future__ import annotations

from fedmatch.he.engine import MAX_CIPHERTEXT_BYTES
from fedmatch.he.keys import MAX_KEY_BUNDLE_BYTES

__all__ = [
    "HANDLE_BYTES",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_HANDLES_PER_REQUEST",
    "MAX_KEY_BUNDLE_BYTES",
    "MAX_LOOKUP_RESPONSE_BYTES",
    "MAX_NODE_RESPONSE_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_TEXT_FIELD",
]

# A search or lookup request: key bundle + probe + header, with headroom.
MAX_REQUEST_BYTES = 6 * 1024 * 1024
# One node's search response: ~340 blocks, i.e. about 1.4 million records at v1 density.
MAX_NODE_RESPONSE_BYTES = 64 * 1024 * 1024
# The coordinator's lookup response gathers every node's blocks.
MAX_LOOKUP_RESPONSE_BYTES = 256 * 1024 * 1024
# Hit details are asked for a few handles at a time; a requester asking for thousands is
# fishing, not verifying.
MAX_HANDLES_PER_REQUEST = 64
HANDLE_BYTES = 16
MAX_TEXT_FIELD = 256
