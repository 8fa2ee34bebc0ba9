"""Which claims a policy means, and on which node a claim in use must be read."""

from __future__ import annotations

from typing import Any

from safehold.api.selectors import LabelSelector
from safehold.controller.sources.claims import claim_node, selector_string


def test_selector_in_the_api_query_form() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "web", "tier": "db"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "stage"]},
                {"key": "skip", "operator": "NotIn", "values": ["yes"]},
                {"key": "backup", "operator": "Exists"},
                {"key": "scratch", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector_string(selector) == (
        "app=web,tier=db,env in (prod,stage),skip notin (yes),backup,!scratch"
    )


def _claim(modes: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": "data"}, "spec": {"accessModes": modes}}


def _pod(phase: str, node: str | None, claim: str = "data") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]
    }
    if node:
        spec["nodeName"] = node
    return {"spec": spec, "status": {"phase": phase}}


def test_a_readwriteonce_claim_in_use_is_read_on_that_node() -> None:
    pods = [_pod("Succeeded", "old-node"), _pod("Running", "node-2"), _pod("Running", "x", "other")]
    assert claim_node(_claim(["ReadWriteOnce"]), pods) == "node-2"


def test_claims_that_any_node_can_mount_are_not_pinned() -> None:
    pods = [_pod("Running", "node-2")]
    assert claim_node(_claim(["ReadWriteMany"]), pods) is None
    assert claim_node(_claim(["ReadWriteOnce"]), [_pod("Running", None)]) is None
    assert claim_node(_claim(["ReadWriteOnce"]), [_pod("Failed", "node-2")]) is None


def _policy(**sources: Any) -> Any:
    from safehold.api.backuppolicy import BackupPolicy

    return BackupPolicy.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"location": {"name": "loc"}, "sources": sources},
        }
    )


def test_two_sources_of_one_name_are_a_conflict() -> None:
    from safehold.controller.sources.claims import VolumeClaim, name_conflict

    selected = "spec.sources.volumes[1].selector"
    named = VolumeClaim("data", "data", "spec.sources.volumes[0].claimName")
    policy = _policy(
        volumes=[{"claimName": "data"}, {"selector": {"matchLabels": {"a": "b"}}}],
        databases=[
            {
                "name": "db",
                "engine": "postgresql",
                "host": "h",
                "credentialsSecretRef": {"name": "s"},
            }
        ],
    )
    # distinct names: no conflict
    assert name_conflict(policy, [named, VolumeClaim("web", "web", selected)]) is None
    # the selector matched the claim the first source names
    message = name_conflict(policy, [named, VolumeClaim("data", "data", selected)])
    assert message is not None
    assert message.startswith(f"{selected}: claim 'data'")
    assert "spec.sources.volumes[0].claimName" in message
    # a claim named like a database source
    message = name_conflict(policy, [VolumeClaim("db", "db", selected)])
    assert message is not None
    assert "spec.sources.databases[0]" in message
