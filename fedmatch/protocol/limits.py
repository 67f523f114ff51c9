"""Size bounds of the wire contract, in one place.

Sized from measured objects at the default parameter set (N = 8192): a seeded probe
ciphertext is ~126 KB, a key bundle ~36 MB (sent once per key epoch), a result block
97 KB per 8,192 records (the compact format of fedmatch.he.resultfmt). Nothing is
"unlimited".
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
    "MAX_RECEIVE_BYTES",
    "MAX_TEXT_FIELD",
]

# The largest message a node or the coordinator accepts: a key registration (bundle plus
# header). Every other request is bounded field by field far below it (a probe ciphertext
# at MAX_CIPHERTEXT_BYTES), so a search is never larger than ~600 KB in practice.
MAX_RECEIVE_BYTES = MAX_KEY_BUNDLE_BYTES + 1024 * 1024
# One node's search response: 3 million records are ~367 blocks of 97 KB (36 MB).
MAX_NODE_RESPONSE_BYTES = 64 * 1024 * 1024
# The coordinator's lookup response gathers every node's blocks.
MAX_LOOKUP_RESPONSE_BYTES = 256 * 1024 * 1024
# Hit details are asked for a few handles at a time; a requester asking for thousands is
# fishing, not verifying.
MAX_HANDLES_PER_REQUEST = 64
# A position handle: response block index and position, big-endian uint32 each.
HANDLE_BYTES = 8
MAX_TEXT_FIELD = 256
