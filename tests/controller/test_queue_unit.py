"""The work queue: one entry per key at its earliest time, never two reconciles of one key."""

from __future__ import annotations

import asyncio

from safehold.controller.queue import WorkQueue


def test_a_key_is_queued_once_at_its_earliest_time() -> None:
    clock = [100.0]
    queue: WorkQueue[str] = WorkQueue(clock=lambda: clock[0])
    queue.add("a", 30)
    queue.add("a", 10)
    queue.add("a", 50)  # later than what is queued: no change
    assert len(queue) == 1
    assert queue._pop_due() == ([], 10)
    clock[0] = 110.0
    assert queue._pop_due() == (["a"], None)
    assert len(queue) == 0


def test_an_add_during_a_reconcile_makes_the_key_due_after_it() -> None:
    clock = [0.0]
    queue: WorkQueue[str] = WorkQueue(clock=lambda: clock[0])
    queue.add("a")
    assert queue._pop_due() == (["a"], None)
    queue.add("a")  # an event while "a" is being reconciled
    assert queue._pop_due() == ([], None)  # not handed out twice
    queue._done("a")
    assert queue._pop_due() == (["a"], None)


def test_forget_drops_a_deleted_object() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a", 5)
    queue.forget("a")
    assert len(queue) == 0
    assert queue._pop_due() == ([], None)


def test_run_hands_out_due_keys_without_overlap() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        seen: list[str] = []
        active: set[str] = set()

        async def work(key: str) -> None:
            assert key not in active
            active.add(key)
            seen.append(key)
            await asyncio.sleep(0.05)
            active.discard(key)
            if seen.count(key) == 1:
                queue.add(key, 0.05)  # ask for one more look

        runner = asyncio.create_task(queue.run(work, workers=2))
        for key in ("a", "b", "c"):
            queue.add(key)
        queue.add("a")  # a duplicate event
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30  # a loaded machine's timers run late, not wrong
        while len(seen) < 6 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # room for a look too many
        runner.cancel()
        return seen

    seen = asyncio.run(scenario())
    assert sorted(seen) == ["a", "a", "b", "b", "c", "c"]


def test_a_cancelled_queue_stops_even_when_a_key_arrives_at_the_same_moment() -> None:
    """kopf stops an operator by cancelling each task once and waiting for it. A queue that
    swallowed that cancellation (``asyncio.wait_for`` on Python 3.11 returns the result
    instead when its inner wait finished in the same turn) kept the operator running
    forever, with its watches stopped: runs never ended and the process never exited."""

    async def scenario() -> bool:
        queue: WorkQueue[str] = WorkQueue()

        async def work(key: str) -> None:
            pass

        runner = asyncio.create_task(queue.run(work, workers=1))
        queue.add("later", 60)  # the queue waits with a timeout: a key is due in a minute
        for _ in range(3):
            await asyncio.sleep(0)
        queue.add("a")  # wakes the wait ...
        runner.cancel()  # ... in the same turn as the stop
        done, _pending = await asyncio.wait({runner}, timeout=2)
        if not done:
            runner.cancel()
        return runner in done and runner.cancelled()

    assert asyncio.run(scenario()), "the queue went on running after it was cancelled"
