"""Chaining an audit record reads the newest records, not the whole trail (format section 15).

Every audited command writes a record naming the newest one. It once read every record to
find it, a GET per command ever run, at the end of every command; now the listing's write
times say which are newest, and only those written within a second of the last are read.
Proved on a real file system (write times set back, as a trail's age makes them) and on a
real S3 server, whose write times have a resolution of a second.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from safehold.repo import Repository
from safehold.repo.audit import AuditRecord, read_records, write_record
from safehold.repo.config import Config
from safehold.repo.layout import AUDIT, audit_name
from safehold.storage import Storage, open_storage
from safehold.storage.wrappers import ForwardingStorage
from testground.objectstores import RunningStore

PASSWORD = "audit newest password"


class _Counting(ForwardingStorage):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.gets: Counter[str] = Counter()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.gets[name.split("/", 1)[0]] += 1
        return super().get(name, offset, length)


def _record(n: int) -> AuditRecord:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return AuditRecord(f"backup {n}", now, now, "ok", "host", "user")


def test_a_long_trail_is_not_read_to_add_a_record(tmp_path: Path) -> None:
    storage = _Counting(open_storage((tmp_path / "repo").as_uri()))
    repo = Repository.init(storage, PASSWORD, Config.new())
    ids = [write_record(storage, repo.aead, _record(n)) for n in range(30)]
    # the trail ages: record n was written an hour ago plus n minutes
    for n, record_id in enumerate(ids):
        path = tmp_path / "repo" / audit_name(record_id)
        when = time.time() - 3600 + 60 * n
        os.utime(path, (when, when))
    storage.gets.clear()
    newest = write_record(storage, repo.aead, _record(30))
    assert storage.gets[AUDIT.rstrip("/")] == 0
    [record] = [r for r in read_records(storage, repo.aead) if r.id == newest]
    assert record.previous == ids[-1]


def test_records_of_one_second_still_form_a_chain(s3_store: RunningStore) -> None:
    s3_store.make_bucket("audit-newest")
    url = s3_store.url("audit-newest", f"repo-{os.getpid()}-{time.monotonic_ns()}")
    storage = _Counting(open_storage(url, s3_store.options))
    repo = Repository.init(storage, PASSWORD, Config.new())
    ids: list[str] = []
    for n in range(5):  # back to back: several in one second of S3's LastModified
        time.sleep(0.002)  # (the records' own times are in milliseconds)
        ids.append(write_record(storage, repo.aead, _record(n)))
    by_id = {r.id: r for r in read_records(storage, repo.aead)}
    assert by_id[ids[0]].previous == ""
    assert [by_id[i].previous for i in ids[1:]] == ids[:-1]
    storage.close()
