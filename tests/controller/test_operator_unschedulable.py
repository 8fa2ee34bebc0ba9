"""A backup Job no node can take (here: a node selector nothing matches) is not silent for
the hours until its deadline: the run's source says why, in the scheduler's words, while it
waits; once a node matches, the run goes on. The test ground's node follows node selectors
(testground.podrunner.node)."""

from __future__ import annotations

from typing import Any

from testground.kube import Namespace


def test_a_run_whose_job_no_node_can_take_says_why_and_goes_on_when_one_can(
    namespace: Namespace, s3_store: Any, operator: Any, kit: Any
) -> None:
    operator()
    kit.store_location(namespace, s3_store, "primary")
    files = kit.write_data(kit.make_claim(namespace, "data"), seed=7, files=3)
    label = f"safehold-test-{namespace}"[:63].rstrip("-")  # no other test's pods ask for it
    kit.policy(namespace, "pol", "primary", ["data"], job={"nodeSelector": {label: "yes"}})
    kit.backup_run(namespace, "run-1", "pol")

    def waiting() -> dict[str, Any] | None:
        run = kit.get(namespace, "backuprun", "run-1")
        sources = (run.get("status") or {}).get("sources") or []
        error = sources[0].get("error") if sources else None
        return error if error and error["reason"] == "PodNotStarting" else None

    error = namespace.cluster.wait_for(waiting, timeout=90, what="the run to say why it waits")
    assert error["message"].startswith("Unschedulable: 0/1 nodes are available"), error
    assert "didn't match node selector" in error["message"]
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] in ("Pending", "Running")

    node = namespace.cluster.kubectl("get", "nodes", "-o", "name").stdout.split()[0]
    namespace.cluster.kubectl("label", node, f"{label}=yes")
    try:
        kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    finally:
        namespace.cluster.kubectl("label", node, f"{label}-")
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    [source] = run["status"]["sources"]
    assert source.get("error") is None
    assert source["files"] == len(files)


def test_a_locations_check_waiting_for_a_node_says_so_without_failing_it(
    namespace: Namespace, s3_store: Any, operator: Any, kit: Any
) -> None:
    """The chart's jobDefaults place every Job, the location's check too: while no node
    matches, the first check says why in Validating's message (Unknown, not False, which
    would stop the location's runs), and it validates once a node does."""
    from safehold.api.jobs import JobSettings

    label = f"safehold-test-{namespace}"[:63].rstrip("-")
    operator(job_defaults=JobSettings(node_selector={label: "yes"}))
    kit.store_location(namespace, s3_store, "primary")

    def available() -> dict[str, Any] | None:
        status = kit.get(namespace, "backuplocation", "primary").get("status") or {}
        found = [c for c in status.get("conditions") or [] if c["type"] == "Available"]
        return found[0] if found else None

    def says_why() -> dict[str, Any] | None:
        condition = available()
        return condition if condition and "Unschedulable" in condition["message"] else None

    condition = namespace.cluster.wait_for(says_why, timeout=90, what="the check to say why")
    assert (condition["status"], condition["reason"]) == ("Unknown", "Validating"), condition
    assert "didn't match node selector" in condition["message"]

    node = namespace.cluster.kubectl("get", "nodes", "-o", "name").stdout.split()[0]
    namespace.cluster.kubectl("label", node, f"{label}=yes")
    try:
        namespace.cluster.wait_for(
            lambda: (available() or {}).get("status") == "True",
            timeout=120,
            what="the location to validate",
        )
    finally:
        namespace.cluster.kubectl("label", node, f"{label}-")
