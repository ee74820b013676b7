"""Stripe-shaped objects, built from values already validated.

The field sets follow Stripe's own sample objects (``openapi/fixtures3.json``; the tests check
the stand-in's objects carry at least every top-level field of those samples). Fields the
stand-in does not model hold what a plain test-mode card or bank payment would show.
"""
