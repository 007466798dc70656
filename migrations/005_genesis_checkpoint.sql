-- 005: the signed empty-tree checkpoint is stored too (written by the worker at start), so the
-- public API can serve checkpoints and proofs without ever holding the ledger's private key.
ALTER TABLE ledger_checkpoints DROP CONSTRAINT ledger_checkpoints_tree_size_check;
ALTER TABLE ledger_checkpoints ADD CONSTRAINT ledger_checkpoints_tree_size_check
    CHECK (tree_size >= 0);
