"""Object lock (WORM) settings that a storage applies to the objects it writes.

One small value shared by the three cloud providers: S3 Object Lock (a mode and a
retain-until date per object version), GCS object retention (``Unlocked`` or ``Locked``
mode with a retain-until time) and Azure version-level immutability (an
``Unlocked``/``Locked`` policy with an expiry). Each provider maps ``mode`` onto its own
names (``lock_mode_names`` of its class; :meth:`ObjectStore._lock_for
<safehold.storage.object_store.ObjectStore._lock_for>`) and sets ``until(now)`` on every
put and create, except for names under ``exempt`` prefixes: the repository exempts
``locks/``, the one kind of object it must delete in normal operation.

(Not the keep rules of ``forget``, which live in :mod:`safehold.engine.retention`: this
module is about making written objects immutable, nothing else.)

The setting reaches a storage either from the location options ``object_lock_mode`` and
``object_lock_days`` or from the repository config (the repository calls
:meth:`safehold.storage.Storage.set_object_lock` when it opens), see docs/immutability.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["LOCK_MODES", "ObjectLock"]

#: ``governance``: privileged users may shorten or remove the lock (S3 governance bypass,
#: GCS/Azure "unlocked" policies). ``compliance``: nobody can, not even the account owner.
LOCK_MODES = ("governance", "compliance")


@dataclass(frozen=True)
class ObjectLock:
    """Lock each written object for ``days`` days in ``mode``."""

    mode: str
    days: int
    exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in LOCK_MODES:
            raise ValueError(f"object lock mode must be one of {', '.join(LOCK_MODES)}")
        if self.days < 1:
            raise ValueError("object lock days must be at least 1")

    def applies_to(self, name: str) -> bool:
        return not any(name.startswith(prefix) for prefix in self.exempt)

    def until(self, now: datetime | None = None) -> datetime:
        """The retain-until time of an object written at ``now``."""
        return (now or datetime.now(UTC)) + timedelta(days=self.days)

    def expires(self, modified: datetime) -> datetime:
        """When the lock of an object written at ``modified`` ends (the earliest delete)."""
        return modified + timedelta(days=self.days)
