"""The fair choice of threads to claim (store/fair.py), as a pure function."""

from __future__ import annotations

from threadsvc.store.fair import Waiting, pick


def burst(group: int, user: str, first: int, count: int) -> list[Waiting]:
    return [Waiting(first + i, group, user) for i in range(count)]


def test_one_owner_alone_uses_every_slot() -> None:
    assert pick([], burst(1, "a", 0, 20), 8, 8, 0.5) == list(range(8))


def test_a_group_is_held_to_its_share_while_another_waits() -> None:
    waiting = burst(1, "a", 0, 20) + burst(2, "b", 100, 20)
    chosen = pick([], waiting, 8, 8, 0.5)
    assert sorted(chosen) == [0, 1, 2, 3, 100, 101, 102, 103]
    # Already over its share (claimed alone before): the other group has every free slot.
    assert pick([((1, "a"), 6)], waiting, 2, 8, 0.5) == [100, 101]


def test_users_of_one_group_take_turns_by_what_they_run() -> None:
    waiting = burst(1, "a", 0, 10) + burst(1, "b", 50, 10)
    assert pick([((1, "a"), 3)], waiting, 4, 8, 0.5) == [50, 51, 52, 0]  # then equals: oldest


def test_a_share_below_one_slot_still_gives_one_and_leaves_the_rest_free() -> None:
    waiting = burst(1, "a", 0, 5) + burst(2, "b", 10, 5) + burst(-1, "system", 20, 1)
    assert pick([], waiting, 6, 6, 0.1) == [0, 10, 20]


def test_the_oldest_goes_first_among_equals() -> None:
    waiting = burst(2, "b", 5, 1) + burst(1, "a", 7, 1) + burst(3, "c", 6, 1)
    assert pick([], waiting, 3, 8, 0.5) == [5, 6, 7]


def test_a_job_at_its_concurrency_limit_waits_and_hides_nothing_behind_it() -> None:
    capped = [Waiting(i, 1, "a", "capped") for i in range(5)]
    others = [Waiting(10 + i, 1, "a", "free") for i in range(3)]
    # Room for 2 more of "capped": the next 2, then the others (older ones of it wait).
    assert pick([], capped + others, 6, 8, 1.0, {"capped": 2}) == [0, 1, 10, 11, 12]
    # None left: "capped" waits whole, even alone with free slots.
    assert pick([], capped, 4, 8, 1.0, {"capped": 0}) == []
    # Over its limit (more running than it allows: the limit was lowered): none either.
    assert pick([], capped + others, 4, 8, 1.0, {"capped": -1}) == [10, 11, 12]


def test_a_group_waiting_only_for_a_capped_job_does_not_bound_the_others() -> None:
    waiting = [Waiting(0, 1, "a", "capped")] + burst(2, "b", 10, 6)
    # Group 1 waits for nothing it may run: group 2 waits alone and takes every slot.
    assert pick([], waiting, 4, 4, 0.5, {"capped": 0}) == [10, 11, 12, 13]
