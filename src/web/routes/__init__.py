"""One routes module per audience: storefront, admin, Stripe, audit, operations."""
