"""The operator's audit log: one JSON line per action on the logger ``safehold.audit``,
and the Job's environment that names the resource that caused it (for the repository's
audit record)."""

from __future__ import annotations

import io
import json
import logging

from safehold.cli.audit import CAUSE_ENV
from safehold.controller.audit_log import AUDIT_LOGGER, JsonLines, kind_of, log_action
from safehold.controller.jobs import JobRequest, build_job

OWNER = {
    "apiVersion": "safehold.io/v1alpha1",
    "kind": "BackupRun",
    "metadata": {"name": "nightly", "namespace": "prod", "uid": "1234-uid"},
}


def test_each_action_is_one_json_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.addHandler(handler)
    try:
        log_action("BackupRun", OWNER, "created", policy="daily")
        log_action("BackupRun", OWNER, "phase", phase="Succeeded")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(d["action"], d["kind"], d["namespace"], d["name"], d["uid"]) for d in lines] == [
        ("created", "BackupRun", "prod", "nightly", "1234-uid"),
        ("phase", "BackupRun", "prod", "nightly", "1234-uid"),
    ]
    assert lines[0]["policy"] == "daily"
    assert lines[1]["phase"] == "Succeeded"
    assert all(d["logger"] == AUDIT_LOGGER and d["time"].endswith("Z") for d in lines)


def test_a_job_names_the_resource_that_caused_it() -> None:
    req = JobRequest("run-1", "prod", "backup", ["backup"], {}, OWNER)
    (container,) = build_job(req)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert json.loads(env[CAUSE_ENV]) == {
        "kind": "BackupRun",
        "namespace": "prod",
        "name": "nightly",
        "uid": "1234-uid",
    }


def test_a_plural_names_its_kind() -> None:
    assert kind_of("backupruns") == "BackupRun"
    assert kind_of("restorerequests") == "RestoreRequest"
