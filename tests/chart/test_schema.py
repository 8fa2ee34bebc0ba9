"""values.schema.json: bad values fail ``helm template`` with a message naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "safehold"

BAD: list[tuple[dict[str, Any], str, str]] = [
    # (values, the key the message must name, what the message must say)
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy", "IfNotPresent"),
    ({"image": {"digest": "latest"}}, "image.digest", "pattern"),
    ({"image": {"tag": "has space"}}, "image.tag", "pattern"),
    ({"imagee": {"tag": "0.2.0"}}, "imagee", "not allowed"),
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces.0", "pattern"),
    ({"watchNamespaces": ["a", "a"]}, "watchNamespaces", "unique"),
    ({"watchNamespaces": "team-a"}, "watchNamespaces", "array"),
    ({"logLevel": "loud"}, "logLevel", "debug"),
    ({"metrics": {"port": 80}}, "metrics.port", "1024"),
    ({"metrics": {"port": "8080"}}, "metrics.port", "integer"),
    ({"health": {"port": 70000}}, "health.port", "65535"),
    ({"serviceMonitor": {"enabled": "yes"}}, "serviceMonitor.enabled", "boolean"),
    ({"serviceMonitor": {"interval": "soon"}}, "serviceMonitor.interval", "pattern"),
    ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory", "pattern"),
    ({"resources": {"limit": {"memory": "1Gi"}}}, "limit", "not allowed"),
    (
        {"jobDefaults": {"priorityClassName": "Backup_Jobs"}},
        "jobDefaults.priorityClassName",
        "pattern",
    ),
    (
        {"jobDefaults": {"resources": {"requests": {"CPU": 1}}}},
        "jobDefaults.resources.requests",
        "ephemeral-storage",
    ),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext.runAsNonRoot", "true"),
    ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext.runAsUser", "1"),
    ({"tolerations": [{"key": "a", "operator": "Maybe"}]}, "tolerations.0.operator", "Exists"),
    ({"tolerations": [{"value": "b"}]}, "tolerations.0", "operator is required"),
    ({"tolerations": [{"key": "a b", "operator": "Exists"}]}, "tolerations.0.key", "pattern"),
    (
        {"jobDefaults": {"tolerations": [{"key": "a", "tolerationSeconds": 60}]}},
        "jobDefaults.tolerations.0",
        "effect is required",
    ),
    (
        {
            "jobDefaults": {
                "tolerations": [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 6}]
            }
        },
        "jobDefaults.tolerations.0.effect",
        "NoExecute",
    ),
    (
        {"jobDefaults": {"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}},
        "jobDefaults.tolerations.0.value",
        "less than or equal to 0",
    ),
    ({"nodeSelector": {"disk": 1}}, "nodeSelector.disk", "string"),
    ({"jobDefaults": {"backoffLimit": 11}}, "jobDefaults.backoffLimit", "10"),
    ({"jobDefaults": {"activeDeadlineSeconds": 0}}, "jobDefaults.activeDeadlineSeconds", "1"),
    ({"jobDefaults": {"deadline": 10}}, "deadline", "not allowed"),
    ({"rbac": {"create": "true"}}, "rbac.create", "boolean"),
]


@pytest.mark.parametrize(
    ("values", "key", "says"), BAD, ids=[f"{key}:{says}" for _, key, says in BAD]
)
def test_bad_value_fails_naming_the_key(
    render: Any, values: dict[str, Any], key: str, says: str
) -> None:
    message = render.fails(values)
    lines = [line for line in message.splitlines() if line.startswith("- ")]
    assert lines, message
    assert any(key in line and says.lower() in line.lower() for line in lines), message


def test_the_defaults_and_a_full_example_are_valid(render: Any) -> None:
    render()
    render(
        {
            "image": {"repository": "registry.example:5000/team/safehold", "tag": "0.1.0"},
            "watchNamespaces": ["prod", "staging"],
            "logLevel": "debug",
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
            "metrics": {"port": 9090, "service": {"type": "ClusterIP"}},
            "serviceMonitor": {"enabled": True, "interval": "1m30s", "labels": {"r": "p"}},
            "resources": {"requests": {"cpu": "0.1", "memory": "100Mi"}, "limits": {"cpu": 1}},
            "jobDefaults": {
                "activeDeadlineSeconds": 3600,
                "tolerations": [
                    {"key": "k"},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                ],
            },
        }
    )


def test_every_default_value_is_described_by_the_schema() -> None:
    """additionalProperties is false everywhere it matters, so each key must be declared."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(defaults) <= set(schema["properties"])
