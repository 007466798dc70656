-- 040: cap changes are stamped in lock order. now() is the start of the transaction, before
-- set-cap waited for the cap's advisory lock; clock_timestamp() here runs after it, so a reserve
-- that queued behind a cap change is never judged by the cap the change replaced.
CREATE OR REPLACE FUNCTION record_cap_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.cap IS DISTINCT FROM OLD.cap
       OR NEW.scope IS DISTINCT FROM OLD.scope THEN
        INSERT INTO cap_history (changed_at, cap, scope) VALUES (clock_timestamp(), NEW.cap, NEW.scope);
    END IF;
    RETURN NEW;
END $$;
