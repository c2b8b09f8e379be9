"""Killing workers, restarting PostgreSQL and Redis, poison images: every batch still finishes, each image is
written once, and the database says what happened. Real processes (see conftest.py); a small random-weight
detector keeps each test under a minute."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from .conftest import free_port, wait_until

pytestmark = pytest.mark.fault


def _started(stack) -> list[tuple[str, int]]:
    if not stack.log.exists():
        return []
    return [(p[1], int(p[2])) for p in (ln.split() for ln in stack.log.read_text().splitlines()) if p[0] == "start"]


def _finish(stack, batch: int, timeout: float = 180) -> list[dict]:
    try:
        return wait_until(lambda: stack.finished(batch), timeout, "the batch to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.rows(batch)}\n{stack.dump_logs()}") from None


def _names(n: int) -> list[str]:
    return [f"img-{i:02d}.png" for i in range(n)]


def test_a_pool_process_killed_mid_image_gets_the_image_back_and_every_image_is_done_once(stack):
    stack.worker(FAULT_DELAY="1.5")  # starts while the scenario is set up: process start-up is most of the time
    s = stack.scenario(_names(6))
    wait_until(lambda: len(_started(stack)) >= 2, 120, "the second image in the detector")
    killed_image, pid = _started(stack)[-1]  # the image in the detector now (each sleeps FAULT_DELAY there)
    os.kill(pid, signal.SIGKILL)  # the prefork child running the detector; acks_late + reject: redelivered

    rows = _finish(stack, s["batch"])
    assert [r["status"] for r in rows] == ["done"] * 6, rows
    # Every image ran through the detector to the end exactly once: the killed run never ended.
    assert stack.detector_runs("end") == Counter({r["image"]: 1 for r in rows})
    assert {r["image"]: r["attempts"] for r in rows} == {r["image"]: 1 + (r["image"] == killed_image) for r in rows}


def test_a_whole_worker_killed_mid_batch_is_replaced_and_the_reaper_gives_its_image_back(stack):
    # Short limits so the image the dead worker held counts as lost within seconds (a real run: minutes).
    stack.env |= {"CELERY_TASK_SOFT_TIME_LIMIT": "6", "CELERY_TASK_TIME_LIMIT": "8", "INSPECTOR_LOST_AFTER": "10"}
    first = stack.worker(FAULT_DELAY="1.5")
    s = stack.scenario(_names(5))
    wait_until(lambda: len(_started(stack)) >= 2, 120, "the second image in the detector")
    held_image, _ = _started(stack)[-1]
    os.killpg(first.pid, signal.SIGKILL)  # main process and pool: its message stays unacknowledged in Redis
    first.wait(timeout=10)
    stack.worker("replacement", FAULT_DELAY="0.2")
    stack.beat()

    rows = _finish(stack, s["batch"])
    assert [r["status"] for r in rows] == ["done"] * 5, rows
    assert stack.detector_runs("end") == Counter({r["image"]: 1 for r in rows})
    assert {r["image"]: r["attempts"] for r in rows} == {r["image"]: 1 + (r["image"] == held_image) for r in rows}


def test_postgresql_restart_mid_batch_the_worker_and_the_web_recover_and_nothing_is_lost_or_doubled(stack):
    port = free_port()
    stack.web(port)
    stack.worker(FAULT_DELAY="0.8")
    s = stack.scenario(_names(8))
    api = f"http://127.0.0.1:{port}/api/batches/{s['batch']}/"

    def web_ok() -> bool:
        request = urllib.request.Request(api, headers={"Authorization": f"Token {s['token']}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    wait_until(web_ok, 120, "the web server to answer")
    wait_until(lambda: len(_started(stack)) >= 3, 120, "the third image in the detector")
    stack.pg.stop("fast")  # every open connection is cut
    time.sleep(3)  # the worker meets the outage: the claim, the result write or the release fails
    stack.pg.start()

    wait_until(web_ok, 60, "the web server to answer again after the restart")  # no restart of the web process
    rows = _finish(stack, s["batch"])
    assert [r["status"] for r in rows] == ["done"] * 8, rows
    runs = stack.detector_runs("end")
    assert set(runs) == {r["image"] for r in rows}
    # A run whose result could not be written (database down) is run again: at most the image in flight.
    assert sum(runs.values()) - len(rows) <= 1, runs
    assert all(r["attempts"] <= 2 for r in rows), rows


def test_redis_restart_mid_batch_loses_the_queue_and_the_reaper_sends_every_image_again_once(stack):
    stack.worker(FAULT_DELAY="0.8")
    stack.beat()
    s = stack.scenario(_names(8))
    wait_until(lambda: len(_started(stack)) >= 2, 120, "the second image in the detector")
    stack.redis.stop()  # no persistence: every queued message is gone
    time.sleep(2)
    stack.redis.start()

    rows = _finish(stack, s["batch"])
    assert [r["status"] for r in rows] == ["done"] * 8, rows
    runs = stack.detector_runs("end")
    assert set(runs) == {r["image"] for r in rows}
    assert max(runs.values()) == 1, runs  # the claim makes the reaper's re-sent messages harmless
    assert all(r["attempts"] == 1 for r in rows), rows


def test_poison_images_fail_with_their_reason_after_bounded_retries_and_the_batch_finishes(stack):
    names = ["img-00.png", "poison-raise.png", "img-01.png", "poison-memory.png", "poison-kill.png", "img-02.png"]
    stack.worker()
    s = stack.scenario(names)

    rows = {r["name"]: r for r in _finish(stack, s["batch"])}
    assert [rows[n]["status"] for n in ("img-00.png", "img-01.png", "img-02.png")] == ["done"] * 3
    raised, memory, killer = rows["poison-raise.png"], rows["poison-memory.png"], rows["poison-kill.png"]
    assert (raised["status"], raised["attempts"]) == ("failed", 1)  # a plain exception: no retry can help
    assert raised["error"] == "ValueError: the detector cannot handle this image"
    assert (memory["status"], memory["attempts"]) == ("failed", 3)
    assert memory["error"] == "MemoryError: out of memory on 3 attempts"
    assert killer["status"] == "failed" and "the worker was lost 3 times" in killer["error"]
    starts = Counter(image for image, _ in _started(stack))
    assert starts[killer["image"]] == 3 and starts[memory["image"]] == 3 and starts[raised["image"]] == 1


def test_the_reaper_sends_again_a_row_stuck_in_running_and_queued_rows_whose_messages_were_lost(stack):
    s = stack.scenario(_names(4))
    stuck, *others = s["inspections"]
    import redis

    redis.Redis.from_url(stack.redis.url).flushdb()  # every message lost before any worker saw one
    stack.pg.sql(
        "UPDATE inspections_inspection SET status = 'running', task_id = 'ghost', attempts = 1, "
        "started_at = now() - interval '1 hour' WHERE id = %s",
        db=stack.db,
        params=(stuck,),
    )
    stack.pg.sql(
        "UPDATE inspections_inspection SET queued_at = now() - interval '1 hour' WHERE id = ANY(%s)",
        db=stack.db,
        params=(others,),
    )
    stack.worker()
    stack.beat()

    rows = {r["id"]: r for r in _finish(stack, s["batch"], timeout=120)}
    assert all(r["status"] == "done" for r in rows.values()), rows
    assert rows[stuck]["attempts"] == 2 and all(rows[i]["attempts"] == 1 for i in others)
    assert max(stack.detector_runs("end").values()) == 1
