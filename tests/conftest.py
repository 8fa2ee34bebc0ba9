"""Settings for every test under tests/.

New keys cost scrypt N=2^17 (about half a second and 128 MiB per open, format section 5);
the tests' keys use 2^14, the least readers accept, so that the hundreds of commands the
suite runs do not each pay for it. Tests that check the real cost clear this variable.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TEST_SAFEHOLD_SCRYPT_N", str(2**14))
# The commands the tests run keep their local cache (docs/cli.md, "Local cache") in a
# directory of this run's, never in the home directory of whoever runs the tests.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="safehold-tests-xdg-cache-")
