-- 001: tickets, the cap configuration row, anti-gaming tables.
-- Retention is infinite: rows are never deleted, voided tickets stay for the audit.

CREATE TABLE golden_config (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cap        integer NOT NULL DEFAULT 5 CHECK (cap >= 0),
    scope      text    NOT NULL DEFAULT 'live' CHECK (scope IN ('live', 'lifetime')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO golden_config (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- Serials are issuance ordinals taken under the advisory lock; a sequence never reuses a value.
CREATE SEQUENCE ticket_serial_seq START 1;

CREATE TABLE tickets (
    ticket_id      uuid PRIMARY KEY,
    serial         bigint NOT NULL UNIQUE,
    user_id        text   NOT NULL,
    request_id     text   NOT NULL UNIQUE,
    request_hash   text   NOT NULL,
    workflow_id    text   NOT NULL,
    state          text   NOT NULL
        CHECK (state IN ('reserved', 'issued', 'redeemed', 'voided', 'revoked')),
    issued_at      timestamptz NOT NULL,
    reserved_until timestamptz,
    user_salt      bytea  NOT NULL,
    key_id         text   NOT NULL DEFAULT '',
    signature      text   NOT NULL DEFAULT '',
    issued_leaf    bigint,
    redeemed_at    timestamptz,
    redeemed_by_workflow text,
    redeemed_leaf  bigint,
    voided_at      timestamptz,
    void_reason    text,
    revoked_at     timestamptz,
    revoke_reason  text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- One ticket per user, ever (voided reservations do not count): backs the check in reserve.
CREATE UNIQUE INDEX tickets_one_per_user ON tickets (user_id) WHERE state <> 'voided';
CREATE INDEX tickets_state ON tickets (state);
CREATE INDEX tickets_reserved_until ON tickets (reserved_until) WHERE state = 'reserved';

CREATE TABLE deny_list (
    user_id    text PRIMARY KEY,
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Fixed-window attempt counter per user (admission increments, reserve re-checks).
CREATE TABLE rate_limit (
    user_id      text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    attempts     integer NOT NULL
);

-- Every public key that ever signed (issuer tickets or ledger checkpoints): rotation keeps old
-- tickets verifiable. The private halves live only in key files.
CREATE TABLE signing_keys (
    key_id     text PRIMARY KEY,
    purpose    text NOT NULL CHECK (purpose IN ('issuer', 'ledger')),
    public_key bytea NOT NULL,
    name       text NOT NULL DEFAULT '',
    status     text NOT NULL DEFAULT 'current' CHECK (status IN ('current', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
