-- 020: a retry of the same request is not a new rate-limit attempt (issue 13.3).
-- The request ids a user sent in the current window, newest last (admission keeps at most the
-- attempt limit + 1 of them): a request id already listed is a retry and is not counted again.
ALTER TABLE rate_limit ADD COLUMN recent_requests text[] NOT NULL DEFAULT '{}';
