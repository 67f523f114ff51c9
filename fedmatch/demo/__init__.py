"""``fedmatch demo`` and the synthetic data it and the benchmarks use.

- :mod:`~fedmatch.demo.federation`: the default demo, a 3-node federation end to end on
  this machine (real processes, PKI, mTLS, HE, audit logs);
- :mod:`~fedmatch.demo.dublin`: ``--scenario dublin``, three Dublin cases from enrolment to
  an official's confirmed decision;
- :mod:`~fedmatch.demo.photos`: the demo's photographs (packaged, or a folder);
- :mod:`~fedmatch.demo.seed`, :mod:`~fedmatch.demo.synthetic`: synthetic unit-norm templates
  and record metadata, written into a register (``fedmatch node seed``).

May import the library, the roles and ``ops``; imported by ``cli`` and ``bench`` (and the
tests), never by the library or the roles.
"""
