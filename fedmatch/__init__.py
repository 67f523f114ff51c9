"""fedmatch: privacy-preserving federated matching for biometric registers.

The library shared by nodes, the coordinator, requesting authorities and auditors, one
room per concern:

- the few modules everything uses, at this level: :mod:`~fedmatch.errors` (the error
  hierarchy), :mod:`~fedmatch.domain` (the vocabulary: headers, categories, hits),
  :mod:`~fedmatch.dates`, :mod:`~fedmatch.config` (TOML -> environment -> flags),
  :mod:`~fedmatch.fileio` (durable writes); and ``rpc/v1`` (the generated stubs);
- the library: ``he`` (the only code that imports the HE library), ``biometrics`` and
  ``evaluation`` (the face path and its error rates), ``grpcutil``, ``pki``, ``audit``,
  ``protocol`` (what parties exchange and check), ``requester`` (the requesting
  authority's side);
- above the roles (``node/`` and ``coordinator/`` beside this package): ``ops`` (health,
  status, metrics, logging, serving), ``demo``, ``bench`` and ``cli`` (the ``fedmatch``
  command).

Each room imports only the rooms below it (``tests/unit/test_imports.py`` checks this and
that no import cycle exists); the top-level modules import nothing but one another.
"""

__version__ = "0.1.0"
