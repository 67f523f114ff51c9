"""The verifier desk: the requesting state's web application where trained verifiers
compare a lookup's probe image with each candidate's facial image and sign verdicts, and an
official resolves the lookup and confirms the decision (``fedmatch desk serve``).

- :mod:`~fedmatch.desk.config`: ``desk.toml``;
- :mod:`fedmatch.pki.keystore` keeps the people's passphrase-protected signing keys
  (``fedmatch desk protect-key``);
- :mod:`~fedmatch.desk.accounts`, :mod:`~fedmatch.desk.sessions`: who may log in, the login
  (a key unlocked in memory for one session) and its back-off;
- :mod:`~fedmatch.desk.cases`, :mod:`~fedmatch.desk.verdicts`,
  :mod:`~fedmatch.desk.worklist`: the cases folder, the verdict files, what a verifier sees
  and signs (blind to the others' verdicts until they gave their own);
- :mod:`~fedmatch.desk.officer`: the official's resolve and confirmation (federation
  calls, usable without the web pages);
- :mod:`~fedmatch.desk.app`, :mod:`~fedmatch.desk.web`, the ``*_views`` modules, templates
  and static files: the Flask application; :mod:`~fedmatch.desk.server`: serving it.

Imports the library (``he``, ``grpcutil``, ``pki``, ``audit``, ``protocol``) and
``requester``; imported by ``cli`` and ``demo``, never by the library or the roles.
"""
