"""Settings for every test under tests/.

New keys cost Argon2id at 64 MiB, 3 passes, 4 lanes (a tenth of a second per open, format
section 5); the tests' keys cost the least readers accept (8 MiB, one pass), so that the
hundreds of commands the suite runs do not each pay for it. Tests that check the real cost
clear this variable.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TEST_SAFEHOLD_CHEAP_KDF", "1")
# The commands the tests run keep their local cache (docs/cli.md, "Local cache") in a
# directory of this run's, never in the home directory of whoever runs the tests.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="safehold-tests-xdg-cache-")
