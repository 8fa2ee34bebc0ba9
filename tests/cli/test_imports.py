"""Start-up cost: a command imports the modules it runs, not the whole engine.

Every ``safehold`` process (each backup and restore Job pod) builds the full parser, so
what building it imports is paid by all of them; ``safehold.engine`` and ``safehold.repo``
load their submodules when a name is first used. Each check runs in a fresh interpreter:
this test process has long imported everything.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules only a backup needs (the chunker and its FastCDC extension).
BACKUP_ONLY = [
    "pyfastcdc",
    "safehold.repo.chunker",
    "safehold.repo.writer",
    "safehold.engine.backup",
]
#: Modules only the cluster-resource and database commands need.
OTHER_COMMANDS_ONLY = [
    "safehold.engine.cluster.kube",
    "safehold.engine.cluster.export",
    "safehold.engine.databases.client",
    "safehold.engine.databases.dump",
    "safehold.engine.replicate",
]


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules loaded once ``code`` has run in a new interpreter (its last stdout line
    is ``json.dumps(sorted(sys.modules))``)."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_building_the_parser_imports_no_backup_or_cluster_code() -> None:
    loaded = _modules_after(
        "import json, sys\n"
        "from safehold.cli.main import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "safehold.cli.main" in loaded  # the probe ran
    assert sorted(loaded & {*BACKUP_ONLY, *OTHER_COMMANDS_ONLY}) == []


def test_restore_names_load_only_the_restore_engine() -> None:
    loaded = _modules_after(
        "import json, sys\n"
        "from safehold.engine import RestoreOptions, restore_snapshot\n"
        "from safehold.repo import Repository, RepositoryLock\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert {"safehold.engine.restore", "safehold.repo.repository", "safehold.repo.locks"} <= loaded
    assert sorted(loaded & {*BACKUP_ONLY, *OTHER_COMMANDS_ONLY}) == []


def test_a_restore_command_never_loads_the_backup_engine(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": "imports test password",
    }
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n" * 1000)
    for args in (["repo", "init"], ["backup", str(data)]):
        subprocess.run(
            [sys.executable, "-m", "safehold", *args, "--json", "-q"],
            env=env,
            capture_output=True,
            timeout=120,
            check=True,
        )
    target = tmp_path / "restored"
    loaded = _modules_after(
        "import json, sys\n"
        "from safehold.cli.main import main\n"
        f"assert main(['restore', 'latest', {str(target)!r}, '--json', '-q']) == 0\n"
        "print(json.dumps(sorted(sys.modules)))\n",
        env,
    )
    assert (target / "data" / "a.txt").read_text() == "alpha\n" * 1000  # it did restore
    assert "safehold.engine.restore" in loaded
    assert sorted(loaded & {*BACKUP_ONLY, *OTHER_COMMANDS_ONLY}) == []


@pytest.mark.parametrize("package", ["safehold.engine", "safehold.repo"])
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = module.no_such_name
