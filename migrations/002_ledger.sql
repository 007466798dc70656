-- 002: the RFC 9162 Merkle ledger (service/ledger_store.py). Append-only: rows are never changed.
-- Appends run under pg_advisory_xact_lock(LEDGER_KEY), so leaf indices are dense (0..n-1).

-- One row per leaf: the canonical entry bytes (golden_press/ledger_entry.py) and their leaf hash.
CREATE TABLE ledger_entries (
    leaf_index bigint      PRIMARY KEY CHECK (leaf_index >= 0),
    ticket_id  uuid        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('issued', 'voided', 'redeemed', 'revoked')),
    entry      bytea       NOT NULL,
    leaf_hash  bytea       NOT NULL CHECK (length(leaf_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Idempotency: a retried activity finds its leaf instead of appending a second one.
    UNIQUE (ticket_id, kind)
);

-- Hash of every complete subtree: (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level).
-- Level 0 repeats the leaf hashes so a proof is one indexed lookup of O(log n) rows. A complete
-- subtree never changes once its last leaf exists, which is what makes proofs cheap.
CREATE TABLE ledger_nodes (
    level smallint NOT NULL CHECK (level >= 0 AND level < 64),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    hash  bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- One signed checkpoint (C2SP signed note) per append batch.
CREATE TABLE ledger_checkpoints (
    tree_size  bigint      PRIMARY KEY CHECK (tree_size > 0),
    root       bytea       NOT NULL CHECK (length(root) = 32),
    note       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_nodes_append_only
    BEFORE UPDATE OR DELETE ON ledger_nodes
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_nodes_no_truncate
    BEFORE TRUNCATE ON ledger_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON ledger_checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_checkpoints_no_truncate
    BEFORE TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
