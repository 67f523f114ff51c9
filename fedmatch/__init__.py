"""fedmatch: privacy-preserving federated matching for biometric registers.

The library shared by nodes, the coordinator, requesting authorities and auditors, one
room per concern:

- the few modules everything uses, at this level: :mod:`~fedmatch.errors` (the error
  hierarchy), :mod:`~fedmatch.domain` (the vocabulary: headers, categories, hits),
  :mod:`~fedmatch.dates`, :mod:`~fedmatch.config` (TOML -> environment -> flags),
  :mod:`~fedmatch.fileio` (durable writes), :mod:`~fedmatch.heap` (freed heap back to the
  OS after a bulk load); and ``rpc/v1`` (the generated stubs);
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

import os as _os

__version__ = "0.1.0"

# OpenCV's own bound on the pixels of an image it decodes, the second line behind the header
# check of fedmatch.biometrics.photofile (the same number as its MAX_PIXELS; a test holds them
# equal). OpenCV reads it once, when cv2 is loaded, so it is set here, before any fedmatch
# module imports cv2; a lower bound set by the operator is kept.
_OPENCV_MAX_PIXELS = 50_000_000
_given = _os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
if not (_given.isdigit() and 0 < int(_given) <= _OPENCV_MAX_PIXELS):
    _os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(_OPENCV_MAX_PIXELS)
