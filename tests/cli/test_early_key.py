"""The key derived while the storage opens (repo/early_key.py, docs/cli.md "Local cache"),
through the real command against a real S3 server (SeaweedFS).

What a user would check: the second command opens the repository without reading its key
object again, the derivation is running before the storage is opened, and nothing
remembered can open what the repository no longer allows: a removed key, an old password,
another repository at the same location, a damaged copy. Requests are counted by a wrapper
around the real storage the command opens.
"""

from __future__ import annotations

import os
import threading
import uuid
from argparse import Namespace
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from safehold.cli.context import early_key
from safehold.cli.main import main
from safehold.repo import Repository, layout
from safehold.repo import keys as keys_module
from safehold.repo.crypto import object_hash
from safehold.repo.early_key import KEY_FILE
from safehold.repo.local_cache import LOCATIONS
from safehold.storage import Storage, open_storage
from safehold.storage.wrappers import ForwardingStorage
from testground.objectstores import RunningStore

PASSWORD = "early key test password"
OTHER_PASSWORD = "another early key password"


class _Counting(ForwardingStorage):
    """Counts the GETs that reach the storage, by kind of object (``keys``, ``index``...)."""

    gets: ClassVar[Counter[str]] = Counter()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        _Counting.gets[name.split("/", 1)[0]] += 1
        return super().get(name, offset, length)


class Repo:
    """A repository in a bucket of its own, and ``safehold`` run against it in this process;
    ``threads_at_open`` holds the names of the threads alive as each command opened its
    storage, ``derivations`` the key derivations each command made, ``steps`` the order of
    the storage opens (``open``) and derivations (``derive on <thread>``)."""

    def __init__(self, store: RunningStore, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bucket = f"early-{uuid.uuid4().hex[:12]}"
        store.make_bucket(bucket)
        self.url = store.url(bucket, "repo")
        self.options = dict(store.options)
        self.cache = cache
        self.threads_at_open: list[set[str]] = []
        self.derivations = 0
        self.steps: list[str] = []

        def counting(*args: Any, **kwargs: Any) -> Storage:
            self.threads_at_open.append({t.name for t in threading.enumerate()})
            self.steps.append("open")
            return _Counting(open_storage(*args, **kwargs))

        real_kek = keys_module._kek

        def kek(*args: Any) -> Any:
            self.derivations += 1
            self.steps.append(f"derive on {threading.current_thread().name}")
            return real_kek(*args)

        monkeypatch.setattr("safehold.storage.open_storage", counting)
        monkeypatch.setattr(keys_module, "_kek", kek)

    def run(
        self,
        *args: str,
        password: str = PASSWORD,
        code: int = 0,
        cache: Path | None = None,
        password_file: Path | None = None,
    ) -> Counter[str]:
        """Run one command (``cache``: another cache directory, as on another machine);
        return its GETs by kind."""
        os.environ.pop("SAFEHOLD_PASSWORD", None)
        pass_it = ["--password-file", str(password_file)] if password_file else []
        if not password_file:
            os.environ["SAFEHOLD_PASSWORD"] = password
        _Counting.gets = Counter()
        self.derivations = 0
        self.steps = []
        opts = [f"--option={k}={v}" for k, v in self.options.items()]
        where = ["--cache-dir", str(cache or self.cache)]
        assert main([*args, "--repo", self.url, *opts, *where, *pass_it, "-q"]) == code
        return _Counting.gets

    def key_ids(self) -> set[str]:
        with open_storage(self.url, self.options) as storage:
            return {layout.object_id(i.name) for i in storage.list(layout.KEYS)}

    def remembered(self, cache: Path | None = None) -> tuple[str, str]:
        """(repository id, key id) the cache remembers for this location."""
        cache = cache or self.cache
        [pointer] = (cache / LOCATIONS).iterdir()
        repository_id = pointer.read_text()
        return repository_id, object_hash((cache / repository_id / KEY_FILE).read_bytes())


@pytest.fixture
def repo(s3_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    for name in [k for k in os.environ if k.startswith("SAFEHOLD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    repo = Repo(s3_store, tmp_path / "cache", monkeypatch)
    repo.run("repo", "init")
    return repo


def test_the_next_command_derives_the_key_before_the_storage_opens(repo: Repo) -> None:
    # 'repo init' remembered the key it made
    [key_id] = repo.key_ids()
    repository_id, remembered = repo.remembered()
    assert remembered == key_id
    assert (repo.cache / repository_id / KEY_FILE).stat().st_mode & 0o777 == 0o600

    gets = repo.run("snapshots")
    assert gets["keys"] == 0  # the remembered bytes are the object the listing names
    assert repo.derivations == 1
    # the derivation started before the storage opened: it runs while the client is made,
    # or (a fast derivation, a slow import) it began, and may have ended, before the open
    assert repo.steps.count("derive on early-key") == 1
    running_at_open = "early-key" in repo.threads_at_open[-1]
    began_before = repo.steps.index("derive on early-key") < repo.steps.index("open")
    assert running_at_open or began_before, repo.steps
    assert "early-key" not in {t.name for t in threading.enumerate()}  # joined by the open


def test_a_cache_without_the_key_reads_it_and_remembers_it(repo: Repo, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    assert repo.run("snapshots", cache=elsewhere)["keys"] == 1
    assert "early-key" not in repo.threads_at_open[-1]  # nothing to derive early
    assert repo.run("snapshots", cache=elsewhere)["keys"] == 0


def test_a_password_prompt_gets_no_head_start_but_the_key_is_remembered(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    # Without SAFEHOLD_PASSWORD, and read from a file only after the storage is open:
    # what a prompt does.
    monkeypatch.setattr("safehold.cli.context.given_password", lambda args: None)
    elsewhere = tmp_path / "elsewhere"
    for _ in range(2):
        assert repo.run("snapshots", cache=elsewhere, password_file=password_file)["keys"] == 1
        assert "early-key" not in repo.threads_at_open[-1]
    assert repo.remembered(elsewhere) == repo.remembered()  # for the next unprompted command


def test_a_removed_key_and_its_old_password_open_nothing(repo: Repo, tmp_path: Path) -> None:
    repo.run("snapshots")  # remembers the first key
    [old_key] = repo.key_ids()
    # The password changed on another machine: a new key added, the old one removed.
    elsewhere = tmp_path / "elsewhere"
    os.environ["SAFEHOLD_NEW_PASSWORD"] = OTHER_PASSWORD
    try:
        repo.run("repo", "key", "add", cache=elsewhere)
    finally:
        del os.environ["SAFEHOLD_NEW_PASSWORD"]
    repo.run("repo", "key", "remove", old_key, password=OTHER_PASSWORD, cache=elsewhere)
    assert repo.remembered()[1] == old_key  # still in this cache, until an open replaces it

    # The old password derives the remembered key, but the repository no longer lists it.
    repo.run("snapshots", code=12)  # wrong password
    assert repo.remembered()[1] == old_key

    gets = repo.run("snapshots", password=OTHER_PASSWORD)
    assert gets["keys"] == 1
    [new_key] = repo.key_ids()
    assert repo.remembered()[1] == new_key
    assert repo.run("snapshots", password=OTHER_PASSWORD)["keys"] == 0


def test_another_repository_at_the_same_location_is_opened_as_itself(
    repo: Repo, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_bytes(b"the first repository's file")
    repo.run("backup", str(source))
    first_id, _ = repo.remembered()
    with open_storage(repo.url, repo.options) as storage:  # deleted, and made again
        for info in list(storage.list("")):
            storage.delete(info.name)
    repo.run("repo", "init")

    repo.run("snapshots")
    second_id, key_id = repo.remembered()
    assert second_id != first_id
    assert {key_id} == repo.key_ids()
    with open_storage(repo.url, repo.options) as storage:
        opened = Repository.open(storage, PASSWORD)
        assert opened.config.id == second_id
        assert list(opened.snapshots()) == []


def test_a_wrong_password_is_refused_after_one_derivation(repo: Repo) -> None:
    repo.run("snapshots")
    repo.run("snapshots", password="not the password at all", code=12)
    assert repo.derivations == 1  # the remembered key is not derived a second time


def test_a_damaged_remembered_key_is_read_again_and_replaced(repo: Repo) -> None:
    repo.run("snapshots")
    repository_id, key_id = repo.remembered()
    (repo.cache / repository_id / KEY_FILE).write_bytes(b"{not a key object")
    assert repo.run("snapshots")["keys"] == 1
    assert repo.remembered() == (repository_id, key_id)
    assert repo.run("snapshots")["keys"] == 0


def test_cleaning_the_cache_drops_the_remembered_key(repo: Repo) -> None:
    repo.run("snapshots")
    repository_id, _ = repo.remembered()
    assert main(["cache", "--cleanup", "--max-age", "0", "--cache-dir", str(repo.cache)]) == 0
    assert not (repo.cache / repository_id).exists()
    assert list((repo.cache / LOCATIONS).iterdir()) == []
    assert repo.run("snapshots")["keys"] == 1  # and the next command opens as before


def test_two_servers_with_a_bucket_of_one_name_are_two_locations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AZURE_STORAGE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)

    def pointer(*options: str) -> Path:
        args = Namespace(repo="s3://backups/cluster", option=list(options), cache_dir=tmp_path)
        early = early_key(args, None)
        assert early is not None
        assert early.memory is not None
        return early.memory.pointer

    one, other = pointer("endpoint=http://a:9000"), pointer("endpoint=http://b:9000")
    assert one != other
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://a:9000")
    assert pointer() == one  # the endpoint from the environment is the same server
    local = early_key(Namespace(repo=str(tmp_path / "repo")), None)
    assert local is not None
    assert local.memory is None  # its keys are read from its directory, nothing remembered
