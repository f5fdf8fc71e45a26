"""One clock for every node: this node's, corrected to the database's.

Nodes compare times with one another: a thread is taken from a node whose heartbeats are older
than `lease-timeout`, by the clock of the node that looks. A node whose clock ran fast would
judge every other node's heartbeats stale and fail their live threads; one that ran slow would
let results outlive their deletion moment. So a node sharing a PostgreSQL store reads the
database's clock at start and at each heartbeat, and every time it writes or compares
(models.now_ms) is its own wall clock plus the offset measured (halfway through the round trip,
so the error is at most half of it). Offsets within CORRECT_BEYOND_MS are taken as none, so
that a well-kept clock is used as it is and times never step back for noise; beyond
WARN_BEYOND_MS the log and /ready say the node's clock is off (it is still corrected).
"""

from __future__ import annotations

import logging

from threadsvc import models
from threadsvc.store.base import Store

log = logging.getLogger(__name__)

CORRECT_BEYOND_MS = 100
WARN_BEYOND_MS = 2000


class ClockCheck:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.offset_ms = 0  # what models.now_ms adds to this node's wall clock

    async def check(self) -> None:
        """Measure the database's clock against this node's and correct by the difference."""
        before = models.wall_clock_ns() // 1_000_000
        database = await self.store.database_now()
        after = models.wall_clock_ns() // 1_000_000
        if database is None:  # an embedded store: one machine, one clock
            return
        measured = database - (before + after) // 2
        offset = measured if abs(measured) > CORRECT_BEYOND_MS else 0
        if abs(offset - self.offset_ms) <= CORRECT_BEYOND_MS and (offset == 0) == (
            self.offset_ms == 0
        ):
            return
        was_off = self.off() is not None
        self.offset_ms = offset
        models.set_clock_offset(offset)
        said = self.off()
        if said is not None:
            log.warning("%s; times are taken from the database's", said)
        elif was_off:
            log.warning("this node's clock agrees with the database's again")

    def off(self) -> str | None:
        """How far this node's clock is off the database's, when more than WARN_BEYOND_MS."""
        if abs(self.offset_ms) <= WARN_BEYOND_MS:
            return None
        way = "ahead of" if self.offset_ms < 0 else "behind"
        return f"this node's clock is {abs(self.offset_ms) / 1000:.1f} s {way} the database's"
