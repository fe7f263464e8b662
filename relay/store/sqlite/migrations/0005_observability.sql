-- What the operator console shows: when the first duplicate of an event came,
-- and the first bytes of each attempt's answer (storage.answer_bytes; emptied
-- with the event's body by payload retention).
ALTER TABLE events ADD COLUMN first_duplicate_at REAL;
ALTER TABLE attempts ADD COLUMN answer BLOB;
-- The W3C traceparent of the ingest span (tracing.enabled): each delivery
-- attempt is its child, and a duplicate links to it.
ALTER TABLE events ADD COLUMN trace_context TEXT;
