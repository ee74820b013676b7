"""A local stand-in for the parts of the Stripe API the ledger uses: a development and test
tool, mounted by `ledger serve` at /_stripe when no Stripe key is configured.

It speaks Stripe's wire format (form-encoded bracket parameters in, JSON out, Stripe-shaped
errors and status codes, Idempotency-Key semantics), serves a hosted pay page with buttons
for every Checkout outcome and for what may happen to a payment afterwards (a card hold that
lapses, refunds, disputes), and delivers signed webhooks from a background thread with
retries. Sessions expire at their `expires_at`; card payments may be held and captured later.

Everything is kept in memory, bounded, guarded by one lock; nothing survives a restart.

Modules: `standin` (the object to create and drive); `api/` (the /v1 plumbing in `routes`,
`auth`, `idempotency`, `failures`; the endpoints in `sessions`, `intents` and `payments`);
`state/` (sessions and payments: kept in `store`, moved on by `checkout`, `authorizations`,
`refunds`, `disputes`, all made together in `world`, copied out by `views`); `objects/`
(their Stripe shapes); `webhooks` (events, signing, delivery); `pay_page/` (routes, and HTML
templates shipped as package data); `clock` (the stand-in's time, which tests may move on);
`vocabulary` (Stripe's words: API version, outcomes, capture and cancellation, reasons,
statuses); `money` (amounts as people read them); `params` (parameter parsing and
validation); `ids`; `bodies` (the request size limit); `errors`.
"""

from stripe_standin.params import parse_stripe_params
from stripe_standin.standin import StripeStandIn
from stripe_standin.webhooks import sign_payload

__all__ = ["StripeStandIn", "parse_stripe_params", "sign_payload"]
