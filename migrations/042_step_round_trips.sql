-- 042: fewer round trips inside the saga steps (issue 15: winners first). A herd's five winners
-- append to the ledger one after another under the cap's and the ledger's advisory locks, and on
-- a loaded box every statement sent while holding them waits for a CPU twice. These functions
-- take a lock and read what the caller needs after it, in one call.
--
-- Why functions and not one SQL statement: a statement reads from the snapshot taken when it
-- starts, i.e. BEFORE it waited for the lock inside it. A VOLATILE plpgsql function under READ
-- COMMITTED (every caller states it: service.store.db.read_committed) takes a fresh snapshot for
-- each statement it runs, so what it reads after the lock wait is what the previous holder
-- committed, exactly as separate statements after `SELECT pg_advisory_xact_lock(..)` did.
-- The lock keys are parameters: service.store.db owns them.

-- The tree's head under the ledger lock (service.store.ledger.LedgerStore.head): its size, the
-- leaf of each (ticket_id, kind) already appended (NULL when new, in input order), and its
-- compact range (golden_press.merkle.frontier_nodes: for each set bit L of the size, largest
-- first, the complete subtree (L, (size >> L) - 1)). A missing subtree comes back short; the
-- caller refuses it.
CREATE FUNCTION ledger_head(
    p_ledger_lock bigint, p_ticket_ids uuid[], p_kinds text[],
    OUT head_size bigint, OUT known_leaves bigint[],
    OUT frontier_levels smallint[], OUT frontier_hashes bytea[]
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_ledger_lock);
    SELECT coalesce(max(e.leaf_index) + 1, 0) INTO head_size FROM ledger_entries e;
    SELECT array_agg(e.leaf_index ORDER BY k.ord) INTO known_leaves
      FROM unnest(p_ticket_ids, p_kinds) WITH ORDINALITY AS k(ticket_id, kind, ord)
      LEFT JOIN ledger_entries e ON e.ticket_id = k.ticket_id AND e.kind = k.kind;
    SELECT array_agg(n.level ORDER BY n.level DESC), array_agg(n.hash ORDER BY n.level DESC)
      INTO frontier_levels, frontier_hashes
      FROM generate_series(0, 62) AS b(level)
      JOIN ledger_nodes n ON n.level = b.level AND n.idx = (head_size >> b.level) - 1
     WHERE (head_size >> b.level) & 1 = 1;
END $$;

-- A ticket's ledger step in one call, in the lock order (cap, ticket row, ledger): the cap lock,
-- the ticket row locked FOR UPDATE (all NULL when there is none), then ledger_head for its
-- (ticket_id, kind).
CREATE FUNCTION lock_ticket_for_ledger(
    p_cap_lock bigint, p_ticket_id uuid, p_ledger_lock bigint, p_kind text,
    OUT ticket tickets, OUT head_size bigint, OUT known_leaves bigint[],
    OUT frontier_levels smallint[], OUT frontier_hashes bytea[]
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_cap_lock);
    SELECT * INTO ticket FROM tickets t WHERE t.ticket_id = p_ticket_id FOR UPDATE;
    SELECT h.head_size, h.known_leaves, h.frontier_levels, h.frontier_hashes
      INTO head_size, known_leaves, frontier_levels, frontier_hashes
      FROM ledger_head(p_ledger_lock, ARRAY[p_ticket_id], ARRAY[p_kind]) h;
END $$;

-- finalise: lock the row, move `reserved` -> `issued` with its signature, return the row as it
-- now is (no row: no such ticket). Any other state is returned unchanged for the caller to judge.
CREATE FUNCTION finalise_ticket(p_ticket_id uuid, p_signature text, p_key_id text)
RETURNS SETOF tickets LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_row tickets;
BEGIN
    SELECT * INTO found_row FROM tickets t WHERE t.ticket_id = p_ticket_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF found_row.state = 'reserved' THEN
        UPDATE tickets t SET state = 'issued', signature = p_signature, key_id = p_key_id,
               updated_at = now()
         WHERE t.ticket_id = p_ticket_id RETURNING * INTO found_row;
    END IF;
    RETURN NEXT found_row;
END $$;
