"""The workers: the threads that follow the event log for the read models (`projections`) and
the side effects (`side_effects`), and run the periodic tasks, in `ledger serve` and
`ledger work` (wired in `web.bootstrap`).

- `control`: `Workers`, starting and stopping a thread per processor and stepping it.
- `leadership`: which processors this process runs (one process each, by advisory lock).
- `slots`: one processor's place in this process: its lock, its position, its waiters.

How one step goes is not here: a read model's in `projections.stepping`, a side effect's
(with its retry schedule) in `side_effects.stepping`. A new read model or side effect needs
nothing here: see the `projections` and `side_effects` packages for where to add one.
"""

from __future__ import annotations

from workers.control import Workers
from workers.slots import Processor

__all__ = ["Processor", "Workers"]
