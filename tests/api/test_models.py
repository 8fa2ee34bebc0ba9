"""The models in Python: snake_case attributes, camelCase on the wire, status round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from safehold.api import (
    COMPLETE,
    BackupLocation,
    BackupPolicy,
    BackupRun,
    BackupRunStatus,
    Condition,
    RestoreRequest,
    SourceResult,
    parse_duration,
)
from safehold.api.types import CRON_PATTERN, RETENTION_SPAN_PATTERN


def test_snake_case_in_python_camel_case_on_the_wire() -> None:
    location = BackupLocation.model_validate(
        {
            "metadata": {"name": "primary", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "provider": "gcs",
                "bucket": "b",
                "repositoryPasswordSecretRef": {"name": "pw"},
                "credentialsSecretRef": {"name": "gcs"},
            },
        }
    )
    assert location.spec.credentials_secret_ref is not None
    assert location.spec.credentials_secret_ref.name == "gcs"
    assert location.spec.repository_password_secret_ref.key == "password"
    assert location.spec.validation_interval == "1h"
    wire = location.model_dump(mode="json", exclude_none=True)
    assert wire["apiVersion"] == "safehold.io/v1alpha1"
    assert wire["kind"] == "BackupLocation"
    assert wire["spec"]["repositoryPasswordSecretRef"] == {"name": "pw", "key": "password"}
    assert "credentials_secret_ref" not in wire["spec"]


def test_objects_from_the_apiserver_keep_unknown_metadata() -> None:
    run = BackupRun.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {
                "name": "r1",
                "generation": 2,
                "resourceVersion": "99",
                "creationTimestamp": "2026-11-26T06:00:00Z",
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {"policyRef": {"name": "p"}},
        }
    )
    assert run.metadata.generation == 2
    assert run.metadata.creation_timestamp == datetime(2026, 11, 26, 6, tzinfo=UTC)
    assert run.model_dump(mode="json")["metadata"]["managedFields"] == [{"manager": "kubectl"}]
    assert run.spec.type == "incremental"


def test_a_status_round_trips_as_the_controller_writes_it() -> None:
    now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    status = BackupRunStatus(
        phase="Succeeded",
        conditions=[
            Condition(
                type=COMPLETE,
                status="True",
                reason="Succeeded",
                message="2 sources backed up",
                last_transition_time=now,
                observed_generation=1,
            )
        ],
        sources=[
            SourceResult(
                name="data",
                kind="volume",
                phase="Succeeded",
                snapshot_id="ab12",
                bytes_read=10,
                bytes_stored=4,
                duration_seconds=1.5,
            )
        ],
        bytes_stored=4,
    )
    wire = status.model_dump(mode="json", exclude_none=True)
    assert wire["conditions"][0] == {
        "type": "Complete",
        "status": "True",
        "reason": "Succeeded",
        "message": "2 sources backed up",
        "lastTransitionTime": "2026-11-26T07:00:00Z",
        "observedGeneration": 1,
    }
    assert wire["sources"][0]["snapshotId"] == "ab12"
    assert BackupRunStatus.model_validate(wire) == status


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(ValidationError, match="reason"):
        Condition(
            type="Complete",
            status="True",
            reason="not a reason",
            last_transition_time=datetime.now(UTC),
        )


def test_models_raise_for_invalid_input_too() -> None:
    with pytest.raises(ValidationError) as info:
        BackupPolicy.model_validate(
            {
                "spec": {
                    "sources": {"volumes": [{"claimName": "a"}]},
                    "location": {"name": "x"},
                    "schedule": {"timeZone": "Mars/Olympus", "slots": [{"cron": "@hourly"}]},
                }
            }
        )
    assert "not a known IANA time zone" in str(info.value)


def test_restore_request_by_policy_and_time() -> None:
    request = RestoreRequest.model_validate(
        {
            "spec": {
                "policyRef": {"name": "p"},
                "pointInTime": "2026-11-25T22:00:00+01:00",
                "namespaceMapping": {"prod": "prod-restored"},
                "target": {"claimName": "restored", "size": "10Gi"},
            }
        }
    )
    assert request.spec.point_in_time == datetime(2026, 11, 25, 21, tzinfo=UTC)
    assert request.spec.existing_resource_policy == "Skip"
    assert request.spec.target is not None
    assert request.spec.target.size == "10Gi"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("1h30m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "1.5h", "1 h", "-1d", "1mo"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_schema_patterns_agree_with_python_checks() -> None:
    import re

    from safehold.api import validate_spec

    base = {
        "sources": {"volumes": [{"claimName": "a"}]},
        "location": {"name": "x"},
    }
    for cron in ["@hourly", "0 3 * * *", "*/15 0-6 * * MON-FRI", "0 0 1 */3 *", "nope", "1 2 3"]:
        spec = {**base, "schedule": {"slots": [{"cron": cron}]}}
        python_ok = validate_spec("BackupPolicy", spec) == []
        schema_ok = re.fullmatch(CRON_PATTERN, cron) is not None
        assert python_ok <= schema_ok, cron  # the schema never rejects what Python accepts
    for span in ["30d", "1h30min", "3mo", "1y6mo", "1 d", "90m", "1min2h", "2w", "y"]:
        spec = {**base, "retention": {"keepWithin": span}}
        python_ok = validate_spec("BackupPolicy", spec) == []
        assert python_ok == (re.fullmatch(RETENTION_SPAN_PATTERN, span) is not None), span


@pytest.mark.parametrize(
    "span",
    ["30d", "12h", "90min", "1y6mo", "1y2mo3w4d5h6min", "2w", "0d", "6m", "1y6m", "1mo1y",
     "3d3d", "1 d", "d", "", "30", "1min2h", "100000000d"],
)  # fmt: skip
def test_the_custom_resource_and_the_engine_read_one_retention_span_grammar(span: str) -> None:
    """keepWithin is checked by the API (no engine import below the controller) and parsed
    by the engine: both must accept exactly the same spans."""
    from pydantic import TypeAdapter, ValidationError

    from safehold.api.types import RetentionSpan
    from safehold.engine.retention import Duration

    try:
        TypeAdapter(RetentionSpan).validate_python(span)
        api_ok = True
    except ValidationError:
        api_ok = False
    try:
        Duration.parse(span)
        engine_ok = True
    except ValueError:
        engine_ok = False
    assert api_ok == engine_ok, span


def test_set_condition_moves_the_transition_time_only_on_change() -> None:
    from safehold.api import FAILED, find_condition, set_condition

    t0 = datetime(2026, 11, 26, 7, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=1)
    conditions = set_condition([], COMPLETE, "False", "Running", "1 of 2 sources", now=t0)
    conditions = set_condition(conditions, FAILED, "False", "NoFailure", "", now=t0)
    conditions = set_condition(conditions, COMPLETE, "False", "Running", "2 of 2", now=t1)
    complete = find_condition(conditions, COMPLETE)
    assert complete is not None
    assert (complete.last_transition_time, complete.message) == (t0, "2 of 2")
    conditions = set_condition(
        conditions, COMPLETE, "True", "Succeeded", "done", now=t1, observed_generation=3
    )
    assert [c.type for c in conditions] == [COMPLETE, FAILED]
    assert conditions[0].last_transition_time == t1
    assert conditions[0].observed_generation == 3
    assert find_condition(conditions, "Available") is None


# Days of the month up to 28, which every month has: 29 to 31 fire only in some months, and
# an expression naming only dates that do not exist ('* * 30 2 *') is refused on purpose
# (test_validation.py's "never fires").
_FIELDS = [(0, 59), (0, 23), (1, 28), (1, 12), (0, 6)]


@st.composite
def _cron_field(draw: st.DrawFn, low: int, high: int) -> str:
    a = draw(st.integers(low, high))
    b = draw(st.integers(a, high))
    step = draw(st.integers(1, 10))
    return draw(
        st.sampled_from(["*", str(a), f"{a}-{b}", f"*/{step}", f"{a},{b}", f"{a}-{b}/{step}"])
    )


@given(st.tuples(*(_cron_field(low, high) for low, high in _FIELDS)))
@settings(max_examples=150, deadline=None)
def test_well_formed_cron_is_accepted_by_both(fields: tuple[str, ...]) -> None:
    import re

    from safehold.api.types import CronExpression

    expression = " ".join(fields)
    assert re.fullmatch(CRON_PATTERN, expression)
    assert TypeAdapter(CronExpression).validate_python(expression) == expression


@given(st.text(alphabet="0123456789*/,-@ abcdhilmnoruwy?#LW\t", max_size=30))
@settings(max_examples=300, deadline=None)
def test_python_never_accepts_what_the_schema_refuses(text: str) -> None:
    import re

    from safehold.api.types import CronExpression

    try:
        TypeAdapter(CronExpression).validate_python(text)
    except ValidationError:
        return
    assert re.fullmatch(CRON_PATTERN, text), text
