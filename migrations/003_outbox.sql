-- 003: transactional outbox. A ledger entry and its event are written in ONE transaction, so an
-- entry can never lack its event; the publisher drains rows in leaf order (the global order) and
-- JetStream's Nats-Msg-Id dedup makes a re-publish after a crash a no-op.
CREATE TABLE event_outbox (
    leaf_index   bigint PRIMARY KEY,
    event_id     uuid   NOT NULL UNIQUE,
    kind         text   NOT NULL CHECK (kind IN ('issued', 'redeemed', 'voided', 'revoked')),
    ticket_id    uuid   NOT NULL,
    payload      bytea  NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    stream_seq   bigint
);
CREATE INDEX event_outbox_pending ON event_outbox (leaf_index) WHERE published_at IS NULL;
