"""Homomorphic encryption: the only package that imports tenseal.

Public surface:

- :mod:`fedmatch.he.params`: named, 128-bit secure parameter sets (and why these numbers);
- :mod:`fedmatch.he.keypair`: the requester's key pair, the only module that holds a
  secret key or decrypts (no node or coordinator module imports it);
- :mod:`fedmatch.he.keys`: the public bundle a requester registers, and the validation a
  node applies to a received bundle;
- :mod:`fedmatch.he.engine`: the search engine interface and the packed kernel that returns
  only masked match bits in a fresh per-query layout;
- :mod:`fedmatch.he.kernel_engine`: the same search with its plaintext products in the
  native kernel (:mod:`fedmatch.he.kernel`, numba), for the kernel parameter set;
  :mod:`fedmatch.he.sealmem` moves words between it and SEAL's objects; its native steps
  beside the products: :mod:`fedmatch.he.keyswitch` (the query's baby-step rotations,
  hoisted), :mod:`fedmatch.he.blend` (a block's garbling and masks),
  :mod:`fedmatch.he.native_rescale`, :mod:`fedmatch.he.native_encrypt` (re-randomization),
  :mod:`fedmatch.he.native_compress` (the compact result format's packing, see
  :mod:`fedmatch.he.resultfmt`) and :mod:`fedmatch.he.ckks_encode` (encoder and NTTs);
- :mod:`fedmatch.he.sharded`: the same kernel across worker processes (every core);
- :mod:`fedmatch.he.ray_engine`: the same kernel on Ray actors;
- :mod:`fedmatch.he.local`: :func:`~fedmatch.he.local.local_engine`, the in-process engine
  of a parameter set (SEAL's products or the kernel's);
- :mod:`fedmatch.he.engines`: :func:`~fedmatch.he.engines.create_engine`, the factory that
  picks one (kept apart so that the base module never imports the engines built on it);
- :mod:`fedmatch.he.layout`, :mod:`fedmatch.he.sealio`: slot layout and SEAL object I/O.

Imports only the shared top-level modules and the generated stubs; imported by whatever
encrypts, searches or checks ciphertexts and keys (``protocol``, ``requester``, ``node``).
"""
