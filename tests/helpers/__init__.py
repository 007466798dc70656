"""Test helpers by topic: servers, stack, worker, waiting, ledger (no test imports another test)."""
