"""The hosted pay page: a plain HTML page per checkout session with a button for every
outcome of Checkout, and, once paid, for what can happen to the payment afterwards in Stripe
(a refund made in the Dashboard, refunds that stay pending then succeed or fail, a dispute).

`routes` answers and acts, `snapshot` copies what a page shows, `render` writes it from the
HTML templates in `templates/` (filled by `markup`)."""
