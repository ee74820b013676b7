"""The /v1 API: what every call goes through (`routes`, `auth`, `idempotency`, `failures`)
and the endpoints that answer them (`sessions`, `intents`, `payments`)."""
