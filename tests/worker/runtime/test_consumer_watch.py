"""When a worker counts its consumer as stuck (worker/runtime/celery_app.py ConsumerWatch): only a whole
stall window of waiting messages, free slots and nothing taken; the end-to-end restart is in test_processes."""

from __future__ import annotations

from worker.runtime.celery_app import ConsumerWatch


def looks(watch: ConsumerWatch, *observations: tuple[float, int | None, int, int]) -> list[bool]:
    return [watch.observe(now, waiting, taken, busy, capacity=4) for now, waiting, taken, busy in observations]


def test_stuck_after_a_whole_window_of_waiting_messages_free_slots_and_nothing_taken() -> None:
    assert looks(ConsumerWatch(10), (0, 5, 7, 0), (5, 5, 7, 0), (10, 5, 7, 0), (15, 5, 7, 0)) == [
        False, False, False, True,
    ]  # fmt: skip


def test_a_message_taken_an_empty_queue_full_slots_or_an_unread_queue_start_the_count_again() -> None:
    for interruption in [(10, 5, 8, 0), (10, 0, 7, 0), (10, 5, 7, 4), (10, None, 7, 0)]:
        taken = interruption[2]
        watch = ConsumerWatch(10)
        seen = looks(watch, (0, 5, 7, 0), (5, 5, 7, 0), interruption, (15, 5, taken, 0), (24, 5, taken, 0))
        assert seen == [False] * 5, interruption
        assert watch.observe(25, 5, taken, 0, capacity=4) is True  # ten seconds after the interruption's end
