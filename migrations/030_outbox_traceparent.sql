-- The W3C traceparent of the saga step that wrote the event (NULL when tracing is off), so the
-- publish, even a later one by the reconciler, continues the saga's trace and hands it on in the
-- message headers.
ALTER TABLE event_outbox ADD COLUMN traceparent text;
