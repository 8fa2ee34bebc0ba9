"""The watch cache: newer versions win, seeds expire, LIST answers keep later writes."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.controller.cache import RESEED_SECONDS, Cache, matches, newer


def obj(name: str, version: int, ns: str = "a", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(version),
            "labels": labels,
        }
    }


def test_a_late_event_does_not_undo_a_newer_write() -> None:
    cache = Cache(["backupruns"])
    cache.put("backupruns", obj("r", 7))
    cache.put("backupruns", obj("r", 5))  # a watch event older than our patch's answer
    assert cache.get("backupruns", "a", "r")["metadata"]["resourceVersion"] == "7"
    cache.put("backupruns", obj("r", 9))
    assert cache.get("backupruns", "a", "r")["metadata"]["resourceVersion"] == "9"


def test_versions_that_are_not_numbers_are_taken_as_newer() -> None:
    assert newer({"metadata": {"resourceVersion": "x"}}, obj("r", 9))
    assert newer(obj("r", 1), None)


def test_reads_are_served_only_in_namespaces_a_watch_event_came_from() -> None:
    cache = Cache(["jobs"])
    cache.put("jobs", obj("j", 1, ns="b"))  # our own write, in a namespace not watched
    assert not cache.holds("jobs", "b")
    cache.watched("jobs", obj("k", 1, ns="a"))
    assert cache.holds("jobs", "a")
    assert not cache.holds("backupruns", "a")  # not a kind the watch feeds


def test_a_seed_replaces_the_namespace_but_keeps_what_came_after_the_list() -> None:
    clock = [0.0]
    cache = Cache(["backupruns"], clock=lambda: clock[0])
    cache.put("backupruns", obj("gone", 3))  # deleted while the watch was down
    cache.put("backupruns", obj("new", 12))  # created after the LIST below was answered
    cache.put("backupruns", obj("kept", 11))  # newer than the LIST's copy
    listing = {"metadata": {"resourceVersion": "10"}, "items": [obj("kept", 4), obj("x", 5)]}
    assert not cache.seeded("backupruns", "a")
    cache.seed("backupruns", "a", listing)
    assert cache.seeded("backupruns", "a")
    names = {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in cache.select("backupruns", "a")
    }
    assert names == {"kept": "11", "x": "5", "new": "12"}
    clock[0] = RESEED_SECONDS + 1
    assert not cache.seeded("backupruns", "a")  # the next read lists again


def test_select_by_equality_labels() -> None:
    cache = Cache(["jobs"])
    cache.put("jobs", obj("a1", 1, app="x", part="1"))
    cache.put("jobs", obj("a2", 1, app="x", part="2"))
    assert [o["metadata"]["name"] for o in cache.select("jobs", "a", "app=x,part=2")] == ["a2"]
    assert len(cache.select("jobs", "a", "app=x")) == 2
    assert len(cache.everything("jobs")) == 2
    cache.drop("jobs", "a", "a1")
    assert cache.get("jobs", "a", "a1") is None


@pytest.mark.parametrize("selector", ["app!=x", "app in (x)", "app"])
def test_other_selectors_are_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="equality"):
        matches({"app": "x"}, selector)
