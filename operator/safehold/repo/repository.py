"""The repository: open or create one on a storage, and read its objects.

This is the one place that knows the object names of the format (section 3).
Writing blobs goes through :class:`safehold.repo.writer.BlobWriter`, which keeps
the write order (packs, then index) that makes crashes harmless.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo import layout
from safehold.repo.config import Config
from safehold.repo.crypto import MasterKeys, Sealer, SealError, blob_aad, object_hash
from safehold.repo.dictionary import Dictionary
from safehold.repo.early_key import EarlyKey, Unsealed
from safehold.repo.errors import (
    CorruptObject,
    NoSuchSnapshot,
    RepositoryExists,
    RepositoryNotFound,
    UnsupportedRepository,
    WrongPassword,
)
from safehold.repo.index import BlobLocation, Index, IndexBody, IndexFile, encode_index
from safehold.repo.keyring import OPENED_WITH, KeyRing
from safehold.repo.keys import (
    KeyObject,
    KeyOpenFailed,
    make_key_object,
    parse_key_object,
    unseal_key,
)
from safehold.repo.local_cache import LocalCache
from safehold.repo.object_reads import ObjectReads
from safehold.repo.pack import BLOB_DICT, BLOB_TREE, FLAG_DICT, decode_blob, pack_key
from safehold.repo.snapshot import Snapshot, decode_snapshot, encode_snapshot
from safehold.repo.tree import Node, decode_tree
from safehold.storage import AlreadyExists, Body, FileBody, NotFound, ObjectLock, Storage

__all__ = ["IndexLoad", "Repository", "apply_object_lock"]

log = logging.getLogger(__name__)
_HEX = re.compile(r"^[0-9a-f]{64}$")


def apply_object_lock(storage: Storage, config: Config) -> None:
    """Make the storage lock what it writes when the config records an object lock.

    Every object but ``locks/`` (which must stay deletable) gets the lock; a provider
    that cannot lock objects refuses (docs/immutability.md).
    """
    if config.object_lock_mode:
        storage.set_object_lock(
            ObjectLock(config.object_lock_mode, config.object_lock_days, exempt=(layout.LOCKS,))
        )


@dataclass
class IndexLoad:
    """What loading the index found: index objects that could not be read."""

    loaded: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)
    #: Every index object the load listed (ids), None when the index was not loaded: what
    #: :meth:`Repository.recheck_index` compares a later listing with.
    listed: set[str] | None = None


class Repository(KeyRing):
    """An opened repository: config, master keys and the merged index; its key objects
    are managed by the methods of :class:`~safehold.repo.keyring.KeyRing`."""

    def __init__(self, storage: Storage, config: Config, keys: MasterKeys, key_name: str) -> None:
        self.storage = storage
        self.config = config
        self.keys = keys
        self.key_name = key_name
        #: Seals and opens packs and objects as the config's format version says
        #: (version 2: a subkey per pack and object, format section 5a).
        self.aead = Sealer(config.version, keys.data_keys)
        self._pack_keys: dict[str, AESGCM] = {}
        #: Dictionaries read (by blob id): a restore reads each once (format section 7).
        self._dictionaries: dict[bytes, Dictionary] = {}
        self.index = Index()
        self.index_load = IndexLoad()
        #: Plain tree blobs read ahead, by tree id (:mod:`safehold.repo.prefetch`).
        self.tree_cache: dict[str, bytes] = {}
        #: The local cache around the storage, when opened with one (repo/local_cache.py).
        self.cache = storage if isinstance(storage, LocalCache) else None

    @property
    def location(self) -> str:
        return self.storage.location

    @property
    def object_lock_days(self) -> int:
        """Days each object written here stays locked (0: none): the config's lock, else the
        one the storage options ``object_lock_*`` set, as at a recovery site that locks what
        replication writes although the primary's config, copied there, records none."""
        if self.config.object_lock_mode:
            return self.config.object_lock_days
        retention = self.storage.object_lock
        return retention.days if retention is not None else 0

    # ------------------------------------------------------------ create and open
    @staticmethod
    def read_config(storage: Storage) -> tuple[Config, bytes]:
        try:
            data = storage.get(layout.CONFIG)
        except NotFound as exc:
            raise RepositoryNotFound(
                f"{storage.location}: there is no repository here (no config object); "
                "check --repo, or create one with 'safehold repo init'"
            ) from exc
        return Config.from_bytes(data, storage.location), data

    @classmethod
    def init(
        cls,
        storage: Storage,
        password: str,
        config: Config | None = None,
        *,
        early: EarlyKey | None = None,
    ) -> Repository:
        """Create a repository with one key object, sealed by ``password``; ``early``
        remembers it for the next open (repo/early_key.py)."""
        config = config or Config.new()
        data = config.to_bytes()
        if any(True for _ in storage.list(layout.KEYS)):
            raise RepositoryExists(f"{storage.location}: a repository already exists here")
        if config.object_lock_mode:
            # Before anything is written: a bucket that cannot lock says how to enable it.
            storage.check_object_lock()
        apply_object_lock(storage, config)
        keys = MasterKeys.generate()
        key = make_key_object(
            password, keys, repository_id=config.id, config_hash=object_hash(data)
        )
        key_name = layout.key_name(object_hash(key))
        # The key first: a config without a key would be a repository nobody can open.
        storage.create(key_name, key)
        try:
            storage.create(layout.CONFIG, data)
        except AlreadyExists as exc:
            storage.delete(key_name)
            raise RepositoryExists(f"{storage.location}: a repository already exists here") from exc
        if early is not None:
            early.opened(config.id, key_name, key)
        return cls(storage, config, keys, key_name)

    @classmethod
    def open(
        cls,
        storage: Storage,
        password: str,
        *,
        load_index: bool = True,
        cache_dir: Path | None = None,
        config: tuple[Config, bytes] | None = None,
        early: EarlyKey | None = None,
    ) -> Repository:
        """Open the repository with ``password``. The index objects are read in the
        background meanwhile (repo/object_reads.py): their round trips overlap the key's
        derivation. ``cache_dir``: keep a local cache of the objects every command reads
        again in ``cache_dir/<repository id>`` (repo/local_cache.py). ``config``: the config
        and its bytes when the caller has read them (:meth:`read_config`). ``early``: the
        derivation the caller started before opening the storage (repo/early_key.py),
        which also remembers the key that opens."""
        try:
            parsed, data = config or cls.read_config(storage)
            if cache_dir is not None:
                storage = LocalCache(storage, cache_dir / parsed.id)
            reads = ObjectReads(storage, layout.INDEX) if load_index else None
            try:
                return cls._open(storage, password, parsed, data, reads, early)
            finally:
                if reads is not None:
                    reads.close()
        finally:
            if early is not None:
                early.close()

    @classmethod
    def _open(
        cls,
        storage: Storage,
        password: str,
        config: Config,
        data: bytes,
        reads: ObjectReads | None,
        early: EarlyKey | None = None,
    ) -> Repository:
        """:meth:`open`'s work; ``reads``: the index objects being read, or None to open
        without loading the index. Takes the early key when the repository holds it, else
        tries the keys, cheapest first."""
        apply_object_lock(storage, config)
        config_hash = object_hash(data)
        names = [info.name for info in storage.list(layout.KEYS)]
        if not names:
            raise CorruptObject(
                f"{storage.location}/keys", "the repository has no key objects; it cannot be opened"
            )
        taken = early.take(names) if early is not None else None
        if taken is not None:  # the repository holds the very bytes it was derived from
            key, unsealed = taken
            return cls._opened(storage, config, config_hash, key, unsealed, reads)
        remembered = OPENED_WITH.get((storage.location, config_hash))
        if remembered in names:  # the key that opened it before, in this process: first
            names.remove(remembered)
            names.insert(0, remembered)
        candidates: list[KeyObject] = []
        raw: dict[str, bytes] = {}
        damaged: dict[str, str] = {}
        unsupported: list[str] = []
        # Parse every key first (cheap), then derive the cheapest first: a key object
        # someone wrote with a high (still allowed) cost does not slow every open down.
        for position, name in enumerate(names):
            if early is not None and name == early.refused:
                continue  # derived already: the password does not open it
            try:
                key_data = storage.get(name)
                if object_hash(key_data) != layout.object_id(name):
                    raise CorruptObject(name, "bytes do not match the object's name")
                key = parse_key_object(key_data, name)
            except NotFound:
                continue
            except CorruptObject as exc:
                damaged[name] = str(exc)
                log.warning("skipping damaged key object %s", exc)
                continue
            except UnsupportedRepository as exc:
                unsupported.append(str(exc))
                continue
            candidates.append(key)
            raw[name] = key_data
            if position == 0 and name == remembered:
                break  # try it alone first; the others only when it no longer opens
        candidates.sort(key=lambda k: (k.name != remembered, k.cost))
        tried = {k.name for k in candidates}
        for key in candidates:
            try:
                unsealed = unseal_key(key, password)
            except KeyOpenFailed:
                continue
            repo = cls._opened(storage, config, config_hash, key, unsealed, reads)
            if early is not None:
                early.opened(config.id, key.name, raw[key.name])
            return repo
        if remembered in tried and len(names) > 1:
            OPENED_WITH.pop((storage.location, config_hash), None)
            return cls._open(storage, password, config, data, reads, early)
        if damaged and not candidates:
            first, message = next(iter(damaged.items()))
            raise CorruptObject(
                first,
                f"{message.removeprefix(first + ': ')}; no key object of the repository can "
                f"be read ({len(damaged)} damaged): restore the keys from a replica",
            )
        if unsupported and not candidates:
            raise UnsupportedRepository(unsupported[0])
        extra = f"; {len(damaged)} key object(s) are damaged" if damaged else ""
        raise WrongPassword(
            f"{storage.location}: the password opens none of the repository's {len(names)} "
            f"key(s){extra}; check SAFEHOLD_PASSWORD or --password-file"
        )

    @classmethod
    def _opened(
        cls,
        storage: Storage,
        config: Config,
        config_hash: str,
        key: KeyObject,
        unsealed: Unsealed,
        reads: ObjectReads | None,
    ) -> Repository:
        """The repository opened with ``key``, which the password unsealed: checked against
        the config, with its index loaded from ``reads``."""
        keys, repo_id, sealed_config_hash = unsealed
        if repo_id != config.id or sealed_config_hash != config_hash:
            raise CorruptObject(
                f"{storage.location}/config",
                "the config does not match the one this key was made for: it was changed "
                "or replaced; restore it from a replica",
            )
        OPENED_WITH[(storage.location, config_hash)] = key.name
        repo = cls(storage, config, keys, key.name)
        if reads is not None:
            repo.load_index(reads)
        return repo

    # ------------------------------------------------------------ objects
    def save_object(self, kind: str, data: Body) -> str:
        """Write an immutable object under ``kind/<hash>``; return the hash. A
        :class:`FileBody` (a pack staged in a file) is hashed and stored from its file."""
        digest = object_hash(data.pieces() if isinstance(data, FileBody) else data)
        name = layout.object_name(kind, digest)
        # AlreadyExists: the same bytes are there already (content-addressed).
        with contextlib.suppress(AlreadyExists):
            self.storage.create(name, data)
        return digest

    def load_index(self, reads: ObjectReads | None = None) -> IndexLoad:
        """Read every index object into one :class:`Index`, leaving out those another
        supersedes (format section 8). Each object is merged as soon as it is read; in the
        rare case that an object supersedes one merged before it (a crash between a
        rewrite and its deletions), the index is merged again without it. Entries go from an
        object's bytes into the index one at a time, never through lists of them. The
        objects are read in the background (``reads``, or reads started here)."""
        if reads is None:
            reads = ObjectReads(self.storage, layout.INDEX)
            try:
                return self.load_index(reads)
            finally:
                reads.close()
        listed: set[str] = set()
        result = IndexLoad(listed=listed)
        index = Index()
        superseded: set[str] = set()
        for name, data in reads.objects():
            digest = layout.object_id(name)
            listed.add(digest)
            body = None if data is None else self._index_body(name, data, digest, result)
            if body is None:
                continue
            superseded.update(body.supersedes)
            if digest not in superseded:
                body.merge_into(index)
                result.loaded.append(digest)
        if superseded & set(result.loaded):
            index = Index()
            loaded, result.loaded = result.loaded, []
            for digest in loaded:
                if digest in superseded:
                    continue
                body = self._read_index_object(layout.index_name(digest), digest, result)
                if body is not None:
                    body.merge_into(index)
                    result.loaded.append(digest)
        # A damaged object that a readable one supersedes is ignored like any superseded
        # one: 'repair index' superseded it, and an object lock may keep it a while.
        for name in [n for n in result.damaged if layout.object_id(n) in superseded]:
            del result.damaged[name]
        for message in result.damaged.values():
            log.warning("skipping damaged index object %s", message)
        self.index = index
        self.index_load = result
        if self.cache is not None:
            self.cache.keep_packs(index.tree_packs())
        return result

    def recheck_index(self) -> bool:
        """Bring the loaded index up to what storage holds now, when the index objects
        listed now are not those it was loaded from; True when it changed anything.

        A command loads the index while it opens the repository, before it takes its lock
        (the lock is sealed with the key being derived meanwhile), so a prune that ended
        in between may have deleted packs the loaded index still names: a backup would
        then reuse blobs that are gone. The lock's holder calls this once it holds the lock
        (format section 11). New index objects that supersede none (another backup's) are
        merged; anything else (an object gone, a prune's superseding one) loads it again."""
        listed = self.index_load.listed
        if listed is None:
            return False
        now = {layout.object_id(i.name) for i in self.storage.list(layout.INDEX)}
        if now == listed:
            return False
        if listed <= now:
            added = []
            for digest in sorted(now - listed):
                body = self._read_index_object(layout.index_name(digest), digest, self.index_load)
                added.append((digest, body))
            if not any(body is not None and body.supersedes for _, body in added):
                for digest, body in added:
                    listed.add(digest)
                    if body is not None:
                        body.merge_into(self.index)
                        self.index_load.loaded.append(digest)
                return True
        self.load_index()
        return True

    def _read_index_object(self, name: str, digest: str, result: IndexLoad) -> IndexBody | None:
        """One index object, checked; None when it is gone, or damaged (noted in ``result``)."""
        try:
            data = self.storage.get(name)
        except NotFound:
            return None
        return self._index_body(name, data, digest, result)

    def _index_body(
        self, name: str, data: bytes, digest: str, result: IndexLoad
    ) -> IndexBody | None:
        """The index object ``name``'s bytes, checked; None when damaged (noted in ``result``)."""
        try:
            if object_hash(data) != digest:
                raise CorruptObject(name, "bytes do not match the object's name")
            return IndexBody(self.aead, data, name)
        except CorruptObject as exc:
            result.damaged[name] = str(exc)
        return None

    def write_index(self, index_file: IndexFile) -> tuple[str, int]:
        """Store an index object; return its id and size."""
        data = encode_index(self.aead, index_file)
        return self.save_object("index", data), len(data)

    def pack_aead(self, pack: str, head: bytes | memoryview | None = None) -> AESGCM:
        """The key that sealed ``pack``'s blobs and header: in format version 2 its own
        subkey (section 5a), read from its prefix (``head``, the pack's first bytes when
        the caller has them; else one small read, remembered). :class:`CorruptObject`
        when the prefix is missing or names a key version this key lacks."""
        if self.aead.prefix_size == 0:
            return self.aead.key_for(b"")
        cached = self._pack_keys.get(pack)
        if cached is not None:
            return cached
        name = layout.pack_object_name(pack)
        if head is None or len(head) < self.aead.prefix_size:
            try:
                head = self.storage.get(name, 0, self.aead.prefix_size)
            except NotFound as exc:
                raise CorruptObject(name, "pack is missing") from exc
        aead = pack_key(self.aead, head, name)
        if len(self._pack_keys) >= 65536:
            self._pack_keys.clear()
        self._pack_keys[pack] = aead
        return aead

    def read_blob(self, blob_id: bytes, expected_type: int | None = None) -> bytes:
        loc = self.locate(blob_id, expected_type)
        name = layout.pack_object_name(loc.pack)
        try:
            sealed = self.storage.get(name, loc.offset, loc.stored)
        except NotFound as exc:
            raise CorruptObject(name, f"pack holding blob {blob_id.hex()} is missing") from exc
        return self.open_blob(blob_id, loc, sealed)

    def locate(self, blob_id: bytes, expected_type: int | None = None) -> BlobLocation:
        """Where the blob is, from the index; :class:`CorruptObject` when it is in none or
        not of ``expected_type``."""
        loc = self.index.lookup(blob_id)
        if loc is None:
            raise CorruptObject(blob_id.hex(), "blob is in no index object")
        if expected_type is not None and loc.type != expected_type:
            raise CorruptObject(blob_id.hex(), f"blob has type {loc.type}, not {expected_type}")
        return loc

    def pack_dictionary(self, pack: str) -> Dictionary:
        """The dictionary of ``pack``, for its blobs flagged ``FLAG_DICT`` (format section
        7): read from the pack itself once per process, else from any other copy the index
        names (the same id is the same bytes). :class:`CorruptObject` when the pack holds
        none or no copy reads."""
        name = layout.pack_object_name(pack)
        where = self.index.dictionary_of(pack)
        if where is None:
            raise CorruptObject(name, "pack holds no dictionary")
        found = self._dictionaries.get(where.id)
        if found is None:
            try:
                found = self.open_pack_dictionary(
                    pack, self.storage.get(name, where.offset, where.stored)
                )
            except (CorruptObject, NotFound):  # another pack's copy
                found = self.dictionary(where.id)
        return found

    def has_dictionary(self, dict_id: bytes) -> bool:
        """Whether this process has read dictionary ``dict_id`` already."""
        return dict_id in self._dictionaries

    def open_pack_dictionary(self, pack: str, sealed: bytes | memoryview) -> Dictionary:
        """``pack``'s dictionary from its ``sealed`` bytes as read from the pack (a caller
        that reads the start of the pack anyway spares the request), checked and kept for
        the process; :class:`CorruptObject` when it is damaged."""
        where = self.index.dictionary_of(pack)
        if where is None:
            raise CorruptObject(layout.pack_object_name(pack), "pack holds no dictionary")
        found = Dictionary(
            where.id, self.open_blob(where.id, BlobLocation(pack, *where[:5]), sealed)
        )
        self._dictionaries[where.id] = found
        return found

    def dictionary(self, dict_id: bytes) -> Dictionary:
        """The dictionary ``dict_id``: from the local cache when it has it, else from
        wherever the index has it (then kept in the cache), read once per process;
        :class:`CorruptObject` when it is in no index or does not read."""
        found = self._dictionaries.get(dict_id)
        if found is None:
            found = self._cached_dictionary(dict_id)
        if found is None:
            found = Dictionary(dict_id, self._read_dictionary(dict_id))
            self.remember_dictionary(found)
        self._dictionaries[dict_id] = found
        return found

    def _read_dictionary(self, dict_id: bytes) -> bytes:
        """The bytes of the first copy of a dictionary that reads (format section 7)."""
        try:
            return self.read_blob(dict_id, BLOB_DICT)
        except CorruptObject as exc:
            first = exc
        for pack, where in self.index.dictionary_copies(dict_id):
            loc = BlobLocation(pack, *where[:5])
            try:
                name = layout.pack_object_name(pack)
                return self.open_blob(dict_id, loc, self.storage.get(name, loc.offset, loc.stored))
            except (CorruptObject, NotFound):
                continue
        raise first

    def _cached_dictionary(self, dict_id: bytes) -> Dictionary | None:
        sealed = self.cache.dictionary(dict_id.hex()) if self.cache is not None else None
        if sealed is None:
            return None
        try:
            data = self.aead.open_object(blob_aad(BLOB_DICT, dict_id), sealed)
        except SealError:
            return None
        return Dictionary(dict_id, data) if self.keys.blob_id(data) == dict_id else None

    def remember_dictionary(self, dictionary: Dictionary) -> None:
        """Keep ``dictionary`` in the local cache (sealed), for the next backup."""
        if self.cache is not None:
            sealed = self.aead.seal_object(blob_aad(BLOB_DICT, dictionary.id), dictionary.data)
            self.cache.keep_dictionary(dictionary.id.hex(), sealed)

    def open_blob(self, blob_id: bytes, loc: BlobLocation, sealed: bytes | memoryview) -> bytes:
        """The plain bytes of the blob at ``loc``, from its ``sealed`` bytes as read from
        its pack: authenticated, decompressed and checked against its id."""
        name = layout.pack_object_name(loc.pack)
        dictionary = self.pack_dictionary(loc.pack) if loc.flags & FLAG_DICT else None
        try:
            aead = self.pack_aead(loc.pack)
            data = decode_blob(aead, loc.type, blob_id, loc.flags, loc.raw, sealed, dictionary)
        except (SealError, ValueError) as exc:
            raise CorruptObject(name, f"blob {blob_id.hex()} is damaged ({exc})") from exc
        if self.keys.blob_id(data) != blob_id:
            raise CorruptObject(name, f"blob {blob_id.hex()} does not match its id")
        return data

    def tree_bytes(self, tree_id: str) -> bytes:
        """The tree blob's plain bytes: from :attr:`tree_cache` when read ahead
        (:func:`safehold.repo.prefetch.prefetch_trees`), else read from its pack."""
        data = self.tree_cache.get(tree_id)
        return data if data is not None else self.read_blob(bytes.fromhex(tree_id), BLOB_TREE)

    def load_tree(self, tree_id: str) -> list[Node]:
        """The tree's nodes (:meth:`tree_bytes`, decoded)."""
        return decode_tree(self.tree_bytes(tree_id), f"tree {tree_id}")

    # ------------------------------------------------------------ snapshots
    def save_snapshot(self, snap: Snapshot) -> str:
        snap.id = self.save_object("snapshots", encode_snapshot(self.aead, snap))
        return snap.id

    def iter_snapshots(self, errors: dict[str, str] | None = None) -> Iterator[Snapshot]:
        """Every snapshot, in listing order, read in the background (repo/object_reads.py);
        a damaged one is left out and noted in ``errors``."""
        reads = ObjectReads(
            self.storage, layout.SNAPSHOTS, lambda name: bool(_HEX.match(layout.object_id(name)))
        )
        try:
            for name, data in reads.objects():
                if data is None:  # forgotten since the listing
                    continue
                try:
                    if object_hash(data) != layout.object_id(name):
                        raise CorruptObject(name, "bytes do not match the object's name")
                    snap = decode_snapshot(self.aead, data, name)
                except CorruptObject as exc:
                    if errors is not None:
                        errors[name] = str(exc)
                    continue
                yield snap
        finally:
            reads.close()

    def snapshots(
        self,
        *,
        source: str | None = None,
        tags: Iterable[str] = (),
        host: str | None = None,
        errors: dict[str, str] | None = None,
    ) -> list[Snapshot]:
        """Snapshots, oldest first, with the given source, all the given tags and of the
        given host (:meth:`Snapshot.of_host`: a snapshot without a host is of every host)."""
        wanted = set(tags)
        found = [
            s
            for s in self.iter_snapshots(errors)
            if (source is None or s.source == source) and wanted <= set(s.tags) and s.of_host(host)
        ]
        found.sort(key=lambda s: (s.datetime, s.id))
        return found

    def find_snapshot(
        self,
        ref: str,
        *,
        source: str | None = None,
        tags: Iterable[str] = (),
        host: str | None = None,
    ) -> Snapshot:
        """Resolve ``latest`` (the newest of ``source``, with all ``tags``, of ``host``) or
        an id or unique id prefix (among the snapshots these filters select).

        An unreadable snapshot object is never passed over: ``latest`` cannot tell whether
        it is the newest, and an id may be its. Both raise :class:`CorruptObject` naming
        it, so that a restore never silently brings back older data."""
        errors: dict[str, str] = {}
        candidates = self.snapshots(source=source, tags=tags, host=host, errors=errors)
        if ref == "latest":
            if errors:
                name, message = sorted(errors.items())[0]
                raise CorruptObject(
                    name,
                    f"{message.removeprefix(name + ': ')}; {len(errors)} snapshot object(s) "
                    "cannot be read, so 'latest' cannot tell which is the newest: give a "
                    "snapshot id ('safehold snapshots' lists them and the unreadable ones), "
                    "or repair or forget the damaged snapshot",
                )
            if not candidates:
                what = f" of source {source!r}" if source else ""
                what += f" of host {host!r}" if host is not None else ""
                raise NoSuchSnapshot(
                    f"{self.location}: no snapshot{what}"
                    f"{' with tags ' + ','.join(tags) if tags else ''}; "
                    "'safehold snapshots' lists them"
                )
            return candidates[-1]
        prefix = ref.lower()
        matches = [s for s in candidates if s.id.startswith(prefix)]
        damaged = sorted(n for n in errors if layout.object_id(n).startswith(prefix))
        found = len(matches) + len(damaged)
        if not found:
            raise NoSuchSnapshot(
                f"{self.location}: no snapshot id begins with {ref!r} "
                "('safehold snapshots' lists them)"
            )
        if found > 1:
            raise NoSuchSnapshot(
                f"{self.location}: {ref!r} begins {found} snapshot ids; give a longer id "
                "prefix ('safehold snapshots' lists them)"
            )
        if damaged:
            raise CorruptObject(
                damaged[0],
                f"{errors[damaged[0]].removeprefix(damaged[0] + ': ')}; snapshot {ref!r} "
                "cannot be read: restore it from a replica, or pick another snapshot",
            )
        return matches[0]
