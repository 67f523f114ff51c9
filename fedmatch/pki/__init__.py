"""The federation's PKI: certificate authorities, certificate names, peer verification and
mutual-TLS credentials for gRPC.

* :mod:`fedmatch.pki.names`: the naming scheme ``[<instance>.]<role>.<scope>.fedmatch.eu``
  and the :class:`Identity` a certificate names;
* :mod:`fedmatch.pki.ca`: root and per-scope intermediate CAs, leaf issuance, CRLs;
* :mod:`fedmatch.pki.csr`: certificate requests, for states that keep their own CA and
  leaf keys (the root signs a state CA's request, a state's CA its parties');
* :mod:`fedmatch.pki.passphrase`: a CA key's passphrase from an environment variable or a file;
* :mod:`fedmatch.pki.keystore`: a person's passphrase-protected signing key (a verifier's,
  an officer's);
* :mod:`fedmatch.pki.verify`: application-level chain, scope and revocation checks;
* :mod:`fedmatch.pki.credentials`: gRPC server and channel credentials (with certificate
  reload) and the verified identity of a call's peer;
* :mod:`fedmatch.pki.provision`: a whole local federation's PKI at once (demos, the load
  benchmark, tests).

Imports the shared top-level modules and ``audit``'s signed-note keys (a certificate binds
its holder's signing key); imported by ``protocol``, ``audit`` and everything above them.
"""

from fedmatch.pki.ca import (
    TlsFiles,
    create_intermediate,
    create_root,
    issue,
    publish_crl,
    revoke,
)
from fedmatch.pki.credentials import (
    channel_credentials,
    channel_options,
    peer_identity,
    server_credentials,
)
from fedmatch.pki.names import (
    ROLES,
    SIGNING_KEY_OID,
    Identity,
    dns_name,
    identity_from_certificate,
    signing_key_name,
)
from fedmatch.pki.verify import check_not_revoked, load_crls, verify_peer

__all__ = [
    "ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "TlsFiles",
    "channel_credentials",
    "channel_options",
    "check_not_revoked",
    "create_intermediate",
    "create_root",
    "dns_name",
    "identity_from_certificate",
    "issue",
    "load_crls",
    "peer_identity",
    "publish_crl",
    "revoke",
    "server_credentials",
    "signing_key_name",
    "verify_peer",
]
