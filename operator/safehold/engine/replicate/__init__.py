"""Replicate: copy the snapshots a recovery site lacks, and exactly the objects they need.

A recovery site holds a replica of the same repository: the same config and, when the
site is created, the same key objects, so the same passwords open it and every object
means the same there. Because every object is named by the BLAKE3 of its bytes, a copy
is verified without any key (hash the bytes, compare with the name) and copying is
idempotent: what arrived before is simply there.

The order keeps the site a valid repository at every instant (format section 10 and
"Replication" in docs/design/repository-format.md):

1. a new site gets the key objects, then the config (a config without a key would be a
   repository nobody can open); an existing site whose key lacks data key versions that a
   rotation added at the primary gets a key object holding them, under its own password;
2. the packs that hold the selected snapshots' blobs which the site's index lacks;
3. fresh index objects at the site naming exactly those packs (never the primary's index
   objects, which may name packs the site does not get, and whose ``supersedes`` lists
   would drop the site's own index objects);
4. the snapshot objects, oldest first.

A SIGKILL at any point leaves packs without index, or indexed blobs without snapshot:
harmless, and the next run finds the packs by listing and indexes them without copying
them again. Transfers run in a thread pool with at most ``jobs`` objects in memory.
"""

from __future__ import annotations

from safehold.engine.replicate.results import (
    KINDS,
    ObjectCounts,
    ReplicateOptions,
    ReplicateResult,
    ReplicationError,
)
from safehold.engine.replicate.run import replicate, select_snapshots, site_newest
from safehold.engine.replicate.site import open_site

__all__ = [
    "KINDS",
    "ObjectCounts",
    "ReplicateOptions",
    "ReplicateResult",
    "ReplicationError",
    "open_site",
    "replicate",
    "select_snapshots",
    "site_newest",
]
