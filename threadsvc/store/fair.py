"""Which waiting threads a node claims: its slots shared fairly between groups, then users.

A tenant with an account can start as many threads as its active limits allow; were the oldest
always claimed first, one user's burst would hold every slot of every node while other groups'
threads wait behind it. Instead each free slot goes to the waiting group holding the fewest of
this node's running threads, and within it to the waiting user holding the fewest (oldest
thread first among equals); server-level threads count as one more group. While other groups
wait, no group is given more than `share` of the node's slots (at least one); while other
users of its group wait, no user more than `share` of the group's (of every slot when the
group waits alone). A slot that only groups (or users) at their share could take stays free
until one drops below it or waits alone: the share is a bound, not a hint. Threads running
when others began to wait are never stopped; the next free slots go to the others.

A job with a concurrency limit (`@job(concurrency=N)`) runs at most N threads on all nodes
together: its waiting threads are passed over (they wait) while N run, and the threads behind
them are chosen as if they were not there.

Pure: the claim's transaction reads the node's running counts and the waiting threads, asks
`pick`, and claims what it chose, so the choice holds however many nodes claim at once.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

Owner = tuple[int, str]  # (group id, username)
K = TypeVar("K", int, str)


@dataclass(frozen=True, slots=True)
class Waiting:
    seq: int
    group_id: int
    username: str
    job: str = ""


def cap(share: float, slots: int) -> int:
    """How many of `slots` one group (or user) may hold while others wait."""
    return max(1, int(share * slots))


def pick(
    running: Iterable[tuple[Owner, int]],
    waiting: Iterable[Waiting],
    limit: int,
    slots: int,
    share: float,
    free: Mapping[str, int] | None = None,
) -> list[int]:
    """The seqs of up to `limit` waiting threads to claim, in the order they were chosen.

    `running`: this node's running threads counted by owner; `waiting`: the waiting threads
    (any order); `slots`: the node's `max-running`; `free`: how many more threads of each job
    with a concurrency limit may run (jobs not named have none)."""
    room = dict(free or {})
    by_group: Counter[int] = Counter()
    by_user: Counter[Owner] = Counter()
    for owner, count in running:
        by_group[owner[0]] += count
        by_user[owner] += count
    queues: dict[int, dict[str, deque[Waiting]]] = {}
    for item in sorted(waiting, key=lambda w: w.seq):
        if room.get(item.job, 1) > 0:
            queues.setdefault(item.group_id, {}).setdefault(item.username, deque()).append(item)

    chosen: list[int] = []
    while len(chosen) < limit and queues:
        others_wait = len(queues) > 1
        group_slots = cap(share, slots) if others_wait else slots
        heads = {g: min(q[0].seq for q in users.values()) for g, users in queues.items()}
        group_id = _fewest(heads, by_group, group_slots if others_wait else None)
        if group_id is None:
            break  # every waiting group holds its share: the slot waits for one to drop
        users = queues[group_id]
        user_heads = {name: queue[0].seq for name, queue in users.items()}
        held = {name: by_user[group_id, name] for name in users}
        username = _fewest(user_heads, held, cap(share, group_slots) if len(users) > 1 else None)
        if username is None:
            break
        item = users[username].popleft()
        chosen.append(item.seq)
        by_group[group_id] += 1
        by_user[group_id, username] += 1
        if not users[username]:
            del users[username]
            if not users:
                del queues[group_id]
        if item.job in room:
            room[item.job] -= 1
            if room[item.job] <= 0:
                _drop_job(queues, item.job)  # the rest of it waits for a thread of it to end
    return chosen


def _drop_job(queues: dict[int, dict[str, deque[Waiting]]], job: str) -> None:
    """Take the threads of `job` out of the queues (and the queues they leave empty)."""
    for group_id, users in list(queues.items()):
        for name, queue in list(users.items()):
            kept = deque(w for w in queue if w.job != job)
            if kept:
                users[name] = kept
            else:
                del users[name]
        if not users:
            del queues[group_id]


def _fewest(heads: Mapping[K, int], held: Mapping[K, int], most: int | None) -> K | None:
    """The key holding the fewest (the oldest head first among equals) of those holding less
    than `most` (None: no bound); None when every one holds `most` or more."""
    open_keys = [k for k in heads if most is None or held.get(k, 0) < most]
    if not open_keys:
        return None
    return min(open_keys, key=lambda k: (held.get(k, 0), heads[k]))
