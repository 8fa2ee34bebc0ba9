"""The leader election's rule: who may take, renew or must wait for the Lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safehold.controller.leader import LEASE_SECONDS, decide

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _spec(
    holder: str, renewed_ago: float | None, duration: int = LEASE_SECONDS
) -> dict[str, object]:
    spec: dict[str, object] = {"holderIdentity": holder, "leaseDurationSeconds": duration}
    if renewed_ago is not None:
        renewed = NOW - timedelta(seconds=renewed_ago)
        spec["renewTime"] = renewed.isoformat().replace("+00:00", "Z")
    return spec


def test_the_holder_renews_and_the_others_wait_while_it_is_fresh() -> None:
    assert decide(_spec("a", 3), "a", NOW) == "renew"
    assert decide(_spec("a", 3), "b", NOW) == "wait"
    assert decide(_spec("a", LEASE_SECONDS - 1), "b", NOW) == "wait"


def test_a_lease_not_renewed_within_its_duration_is_taken() -> None:
    assert decide(_spec("a", LEASE_SECONDS + 1), "b", NOW) == "take"
    assert decide(_spec("a", 40, duration=60), "b", NOW) == "wait"  # its own duration counts


def test_a_released_or_new_lease_is_taken_at_once() -> None:
    assert decide(_spec("", 1), "b", NOW) == "take"  # released by a clean stop
    assert decide({}, "b", NOW) == "take"
    assert decide(_spec("a", None), "b", NOW) == "take"  # never renewed: no proof of life
