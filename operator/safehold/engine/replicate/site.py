"""The recovery site: opened as a replica of the primary, created (keys, then config)
when the location is empty, refused when it holds another repository."""

from __future__ import annotations

from safehold.engine.replicate.results import KINDS, ObjectCounts, ReplicationError
from safehold.repo import CorruptObject, Repository, layout
from safehold.repo.crypto import object_hash
from safehold.storage import AlreadyExists, NotFound, Storage

__all__ = ["open_site"]


def open_site(
    source: Repository,
    target: Storage,
    password: str,
    *,
    create: bool = True,
    counts: dict[str, ObjectCounts] | None = None,
) -> tuple[Repository | None, bool]:
    """Open the replica at ``target``, creating it as a copy of ``source``'s identity.

    Returns the opened site (None in a dry run of a site that does not exist yet) and
    whether it was created now. Refuses a location that holds another repository.
    """
    counts = counts if counts is not None else {kind: ObjectCounts() for kind in KINDS}
    _, config_bytes = Repository.read_config(source.storage)
    try:
        site_config = target.get(layout.CONFIG)
    except NotFound:
        site_config = None
    if site_config is None:
        if any(True for _ in target.list(layout.SNAPSHOTS)) or any(
            True for _ in target.list(layout.KEYS)
        ):
            raise ReplicationError(
                f"{target.location}: holds repository objects but no config; it is not a "
                "replica this tool can complete: give an empty location or the site's URL"
            )
        if not create:  # a dry run: report what creating the site would copy
            for info in source.storage.list(layout.KEYS):
                counts["keys"].copied += 1
                counts["keys"].copied_bytes += info.size
            counts["config"].copied += 1
            counts["config"].copied_bytes += len(config_bytes)
            return None, True
        # Keys first, then the config: like 'repo init', never a config nobody can open.
        for info in source.storage.list(layout.KEYS):
            _copy_small(source.storage, target, info.name, counts["keys"])
        _copy_small(source.storage, target, layout.CONFIG, counts["config"], expected=config_bytes)
        created = True
    else:
        if site_config != config_bytes:
            raise ReplicationError(
                f"{target.location}: holds another repository (or another config) than "
                f"{source.location}; a recovery site must be a replica of the same "
                "repository: give an empty location to create one"
            )
        counts["config"].skipped += 1
        counts["config"].skipped_bytes += len(site_config)
        created = False
    site = Repository.open(target, password)
    # A data key rotation at the primary (format section 5b) reaches the site here, before
    # any object sealed with the new version does: otherwise the site's key could not
    # open what arrives. The site keeps its own password.
    if not created and site.adopt_rotation(password, source.keys) is not None:
        counts["keys"].copied += 1
    return site, created


def _copy_small(
    source: Storage, target: Storage, name: str, counts: ObjectCounts, expected: bytes | None = None
) -> None:
    """Copy a key or the config: keys are verified by their name, the config by its bytes."""
    data = source.get(name)
    if expected is not None and data != expected:
        raise ReplicationError(f"{source.location}: {name} changed while replicating; run again")
    if name.startswith(layout.KEYS) and object_hash(data) != layout.object_id(name):
        raise CorruptObject(f"{source.location}/{name}", "bytes do not match the object's name")
    try:
        target.create(name, data)
    except AlreadyExists:
        counts.skipped += 1
        counts.skipped_bytes += len(data)
        return
    counts.copied += 1
    counts.copied_bytes += len(data)
