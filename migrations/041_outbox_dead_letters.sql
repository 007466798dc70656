-- 041: an outbox row NATS refuses for good (too big, refused by the stream) is parked as a dead
-- letter instead of being retried forever in front of every later event. It stays in the
-- outbox, with its error, for the audit, the metrics and an operator to deal with.
ALTER TABLE event_outbox
    ADD COLUMN dead_lettered_at timestamptz,
    ADD COLUMN last_error text;
DROP INDEX event_outbox_pending;
CREATE INDEX event_outbox_pending ON event_outbox (leaf_index)
    WHERE published_at IS NULL AND dead_lettered_at IS NULL;
CREATE INDEX event_outbox_dead_letters ON event_outbox (leaf_index)
    WHERE dead_lettered_at IS NOT NULL;
