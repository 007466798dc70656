-- 006: the public ledger (issue 14). Cap changes become ledger entries (kind `cap`, encoding v2,
-- golden_press/ledger_entry.py): the row's ticket_id is a fresh id naming the change, since a
-- cap entry names no ticket. Every append NOTIFYs `golden_ledger`, so the tile publisher
-- (service/store/tile_files.py) signs and publishes without polling hard.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('issued', 'voided', 'redeemed', 'revoked', 'cap'));

CREATE FUNCTION ledger_notify_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('golden_ledger', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_entries_notify AFTER INSERT ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_notify_append();
CREATE TRIGGER ledger_checkpoints_notify AFTER INSERT ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_notify_append();
