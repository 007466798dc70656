-- 004: every cap/scope change, so the audit can judge each issuance by the cap then in force
-- (lowering the cap later must not make history look like an overshoot).
CREATE TABLE cap_history (
    id         bigserial PRIMARY KEY,
    changed_at timestamptz NOT NULL,
    cap        integer NOT NULL,
    scope      text NOT NULL
);
-- The configuration before this migration has been in force since the beginning.
INSERT INTO cap_history (changed_at, cap, scope)
    SELECT '-infinity', cap, scope FROM golden_config;

CREATE FUNCTION record_cap_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.cap IS DISTINCT FROM OLD.cap
       OR NEW.scope IS DISTINCT FROM OLD.scope THEN
        INSERT INTO cap_history (changed_at, cap, scope) VALUES (now(), NEW.cap, NEW.scope);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER golden_config_history AFTER INSERT OR UPDATE ON golden_config
    FOR EACH ROW EXECUTE FUNCTION record_cap_change();
