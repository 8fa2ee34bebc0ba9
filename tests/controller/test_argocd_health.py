"""deploy/argocd-health.yaml: Argo CD's health of each Safehold resource, from its status.

The scripts run in Lua 5.1 (lupa), as Argo CD's gopher-lua runs them: first on statuses of
every shape the API allows, then on what the operator really wrote on the test ground."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from safehold.api import KINDS
from testground.kube import Namespace
from testground.objectstores import RunningStore

REPO = Path(__file__).resolve().parents[2]
CHECKS = yaml.safe_load((REPO / "deploy" / "argocd-health.yaml").read_text())["data"]
PREFIX = "resource.customizations.health.safehold.io_"


def health(obj: dict[str, Any]) -> tuple[str, str | None]:
    """What Argo CD shows for ``obj``: (status, message)."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(CHECKS[PREFIX + obj["kind"]])
    return str(result["status"]), result["message"]


def _obj(kind: str, status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "metadata": {"name": "x", "generation": generation}}
    if status is not None:
        out["status"] = status
    return out


def _condition(type_: str, status: str, reason: str = "R", message: str = "m") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def test_every_kind_has_a_check() -> None:
    assert set(CHECKS) == {PREFIX + kind for kind in KINDS}


@pytest.mark.parametrize(
    ("status", "generation", "expected"),
    [
        (None, 1, "Progressing"),
        ({"conditions": [_condition("Available", "Unknown", "Validating")]}, 1, "Progressing"),
        ({"observedGeneration": 1, "conditions": [_condition("Available", "True")]}, 1, "Healthy"),
        ({"observedGeneration": 1, "conditions": [_condition("Available", "True")]}, 2,
         "Progressing"),
        ({"observedGeneration": 2, "conditions": [_condition("Available", "False")]}, 2,
         "Degraded"),
    ],
)  # fmt: skip
def test_a_location_is_as_healthy_as_its_last_check(
    status: dict[str, Any] | None, generation: int, expected: str
) -> None:
    assert health(_obj("BackupLocation", status, generation))[0] == expected


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], "Progressing"),
        ([_condition("Ready", "True", "Scheduled")], "Healthy"),
        ([_condition("Ready", "True", "Suspended")], "Suspended"),
        ([_condition("Ready", "False", "LocationNotFound")], "Degraded"),
        ([_condition("Ready", "True"), _condition("Replicated", "False")], "Degraded"),
        ([_condition("Ready", "True"), _condition("Verified", "False")], "Degraded"),
        ([_condition("Ready", "True"), _condition("RestoreTested", "False")], "Degraded"),
        ([_condition("Ready", "True"), _condition("Verified", "True")], "Healthy"),
    ],
)
def test_a_policy_is_degraded_by_what_it_promises_and_does_not_do(
    conditions: list[dict[str, Any]], expected: str
) -> None:
    assert health(_obj("BackupPolicy", {"conditions": conditions}))[0] == expected


@pytest.mark.parametrize("kind", ["BackupRun", "RestoreRequest"])
@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (None, "Progressing"),
        ("Pending", "Progressing"),
        ("Running", "Progressing"),
        ("Succeeded", "Healthy"),
        ("PartiallyFailed", "Degraded"),
        ("Failed", "Degraded"),
    ],
)
def test_a_run_or_restore_is_healthy_only_when_it_succeeded(
    kind: str, phase: str | None, expected: str
) -> None:
    status = {"phase": phase} if phase else {}
    if phase in ("Failed", "PartiallyFailed"):
        status["conditions"] = [
            _condition("Complete", "True", phase, "done"),
            _condition("Failed", "True", "ClaimNotFound", "data: claim 'x' does not exist"),
        ]
    got, message = health(_obj(kind, status))
    assert got == expected
    if expected == "Degraded":
        assert message == "data: claim 'x' does not exist"


def test_the_operator_s_own_statuses(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """What Argo CD would show for the objects of a real backup, a failed run and a
    restore, as the operator wrote them."""
    operator(poll_interval=1.0)
    kit.store_location(namespace, s3_store, "loc")
    kit.store_location(namespace, s3_store, "gone", bucket="no-such-bucket", make_bucket=False)
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=1, files=3)
    kit.policy(namespace, "pol", "loc", ["data"])
    kit.policy(namespace, "broken", "loc", ["missing"])
    kit.backup_run(namespace, "ok", "pol")
    kit.kubectl_wait(namespace, "backuprun/ok", "Complete", timeout=120)
    kit.restore_request(
        namespace, "back", backupRunRef={"name": "ok"}, target={"claimName": "restored"}
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=120)
    kit.backup_run(namespace, "bad", "broken")
    kit.kubectl_wait(namespace, "backuprun/bad", "Complete", timeout=120)
    kit.kubectl_wait(namespace, "backuplocation/gone", "Available=False", timeout=120)

    def shown(kind: str, name: str) -> tuple[str, str | None]:
        return health(kit.get(namespace, kind.lower(), name))

    assert shown("BackupLocation", "loc")[0] == "Healthy"
    status, message = shown("BackupLocation", "gone")
    assert status == "Degraded"
    assert message is not None
    assert "no-such-bucket" in message
    assert shown("BackupPolicy", "pol")[0] == "Healthy"
    status, message = shown("BackupPolicy", "broken")
    assert status == "Degraded"
    assert message is not None
    assert "missing" in message
    assert shown("BackupRun", "ok")[0] == "Healthy"
    assert shown("RestoreRequest", "back")[0] == "Healthy"
    status, message = shown("BackupRun", "bad")
    assert status == "Degraded"
    assert message is not None
    assert "ClaimNotFound" in message or "missing" in message
