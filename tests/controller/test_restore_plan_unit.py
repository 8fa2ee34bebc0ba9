"""Which sources a RestoreRequest restores, and the fields that only some sources take:
``spec.target`` (one volume source) and ``spec.paths`` (files of volume sources) are
refused, with a message, where they would be ignored."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api import RestoreRequest
from safehold.controller.common import Stop
from safehold.controller.restoreplan import chosen_sources
from safehold.controller.restoresources import Origin, RestoreSource

ORIGIN = Origin(
    policy="pol",
    run="run",
    described="BackupRun run",
    sources=[
        RestoreSource(name="data", kind="volume", snapshot_id="a" * 64),
        RestoreSource(name="db", kind="database", snapshot_id="b" * 64),
        RestoreSource(name="resources", kind="clusterResources", snapshot_id="c" * 64),
    ],
)


def _request(**spec: Any) -> RestoreRequest:
    return RestoreRequest.model_validate(
        {
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"backupRunRef": {"name": "run"}, **spec},
        }
    )


def _refused(**spec: Any) -> str:
    with pytest.raises(Stop) as caught:
        chosen_sources(_request(**spec), ORIGIN)
    assert caught.value.reason == "InvalidSpec"
    return caught.value.message


def test_target_takes_one_volume_source() -> None:
    chosen = chosen_sources(_request(target={"claimName": "copy"}, sources=["data"]), ORIGIN)
    assert [s.name for s in chosen] == ["data"]
    # all three, or one that is not a volume: refused, naming the volume sources
    for sources in ([], ["db"], ["resources"]):
        message = _refused(target={"claimName": "copy"}, sources=sources)
        assert message == (
            "spec.target restores one volume (or point-in-time database) source: set "
            "spec.sources to one of data"
        )


def test_paths_need_a_volume_source() -> None:
    chosen = chosen_sources(_request(paths=["*.conf"], sources=["data", "db"]), ORIGIN)
    assert [s.name for s in chosen] == ["data", "db"]  # applied to the volume
    message = _refused(paths=["*.conf"], sources=["db", "resources"])
    assert message.startswith("spec.paths chooses files of volume sources")
    assert "(db, resources)" in message
