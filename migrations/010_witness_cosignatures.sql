-- 010: witness cosignatures of ledger checkpoints (c2sp.org/tlog-cosignature, Ed25519
-- cosignature/v1), collected by the log's submitter (service/witness/submitter.py). One line per
-- (checkpoint, witness): the first cosignature that witness gave for that tree size, verified
-- before it is stored. Served appended to the checkpoint's own note. Append-only, like the ledger.
CREATE TABLE ledger_cosignatures (
    tree_size   bigint      NOT NULL REFERENCES ledger_checkpoints (tree_size),
    witness     text        NOT NULL,
    line        text        NOT NULL CHECK (right(line, 1) = E'\n'),
    cosigned_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tree_size, witness)
);
CREATE INDEX ledger_cosignatures_by_witness ON ledger_cosignatures (witness, tree_size DESC);

CREATE TRIGGER ledger_cosignatures_append_only
    BEFORE UPDATE OR DELETE ON ledger_cosignatures
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_cosignatures_no_truncate
    BEFORE TRUNCATE ON ledger_cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
