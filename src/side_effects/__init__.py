"""The write side's side effects: what the ledger does outside its database when the log says
so (refunds at Stripe, customer e-mail), and the periodic resync of what Stripe never told us.
They follow the event log like the read models (`projections`), run by the same workers
(`workers`), but act at least once instead of exactly once, so each is idempotent.

- `base`: what a side effect (`SideEffect`) and a periodic task (`PeriodicTask`) are.
- `stepping`: one step of a side effect; `retries`: the retry schedule of its failed events.
- `refunds`: the refund worker (what a refund is: `ledger.refunds`).
- `notifications`, `mailers`, `sent_messages`: customer e-mail.
- `resync`: the resync task (also `ledger stripe resync`).

To add a side effect: a module here with a class that has a `name` (its tracking row and lock
are named after it), `topics = reacts_to(Order.SomethingHappened, ...)` and an idempotent
`handle(event, position)` that raises when the event should be tried again later; then list it
in `web.bootstrap.processors`. A periodic task needs `name`, `interval` and `run()`.
"""
