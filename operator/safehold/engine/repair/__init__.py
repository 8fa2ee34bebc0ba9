"""Repair: an index rebuilt from the packs that exist, and snapshots without the lost data.

What verify reports as damage (docs/repair.md) is mended in three steps, in restic's
spirit:

1. :func:`repair_index` rebuilds the index from the packs on the storage. Every pack
   describes itself (format section 7): its header lists its blobs, so the index is what
   the headers say. Index entries of packs that are missing, truncated or unreadable are
   dropped; packs no index names are checked and added back; the good blobs of a damaged
   pack are copied into a new pack ("salvaged") and the damaged pack is left unindexed
   (prune deletes it). With ``read_data`` every pack is read whole and every blob is
   opened and checked against its id, so that blobs damaged inside a pack are dropped
   too. Afterwards the index names only data that exists, so the next backup's dedup
   check no longer finds the lost data and stores it again.
2. A backup of each affected source stores the lost data again where the source still
   has it (a snapshot that needed only that data is whole again).
3. :func:`repair_snapshots` finds the snapshots that still reference data the index
   lacks and writes a repaired copy of each: a file with a lost chunk is left out
   (never kept with a hole or cut short: a restore never writes wrong bytes), a
   directory whose tree is lost becomes an empty directory, and the copy carries the
   tag ``repaired`` and, in its ``meta``, the original's id and what was lost. The
   originals stay until the user forgets them (``forget=True`` removes them, and the
   snapshot objects that cannot be read at all).

Both run under the exclusive lock (a shared one for a dry run) and write in the order of
format section 10: new packs, then the index objects naming them (the last one
superseding every index object read), then snapshot objects, and only then delete. A
crash at any point leaves unreferenced packs, superseded index objects or an extra
repaired copy, which readers ignore; running the repair again completes the work.
"""

from __future__ import annotations

from safehold.engine.repair.index import IndexRepairReport, repair_index
from safehold.engine.repair.shared import REPAIRED_TAG, IndexFirst, RepairError
from safehold.engine.repair.snapshots import (
    SnapshotRepair,
    SnapshotRepairReport,
    repair_snapshots,
)

__all__ = [
    "REPAIRED_TAG",
    "IndexFirst",
    "IndexRepairReport",
    "RepairError",
    "SnapshotRepair",
    "SnapshotRepairReport",
    "repair_index",
    "repair_snapshots",
]
