"""Set-based replays of the read models whose SQL outgrew their projection's module
(`Projection.replay_in_sql`: `ledger audit verify` rebuilds each read model from the decoded log
with a few statements, a second definition of it compared with the live tables). Each module
here is one read model's; the shorter ones stay in their projection's class."""
