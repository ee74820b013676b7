"""The ledger's commands, one module per part of the shop, each read -> decide -> save.

A command loads the aggregates it needs, asks them to decide (the rules live on the
aggregates, in `ledger.domain`), and saves every aggregate the decision touched in one commit
(`ledger.decisions`). `ledger.application.Ledger` puts them together.
"""
