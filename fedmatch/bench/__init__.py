"""The benchmark commands (``fedmatch bench ...``): each prints one JSON line with the
fastest plain baseline on the same data in the same run.

- :mod:`~fedmatch.bench.search`: encrypted 1:N search through a real node over mTLS against
  a numpy search of the same register (``make bench``);
- :mod:`~fedmatch.bench.federation`: K node processes and a coordinator, lookups end to end;
- :mod:`~fedmatch.bench.flood`: the same federation, one state's lookups alone and while
  another state's flooder processes attack it (issue 21);
- :mod:`~fedmatch.bench.audit`: durable appends, inclusion proofs, full log verification;
- :mod:`~fedmatch.bench.kernel`: the native product kernel against SEAL's products, per
  block and through the engines (no node);
- :mod:`~fedmatch.bench.faces`: the face path on photos as given, stage times per megapixel
  band, against a decode-only baseline.

May import anything but ``cli``; imported only by ``cli`` (and the tests).
"""
