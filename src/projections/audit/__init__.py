"""What auditors read: the log itself, as recorded, and what can be proved from it."""
