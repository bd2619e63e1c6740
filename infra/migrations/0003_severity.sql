-- The severity processor claims a lot excursion by inserting its row, then
-- publishes the event and stamps published_at. A crash between the two
-- leaves published_at NULL, so the replayed wafer publishes it again (same
-- deterministic event id) instead of losing it; a stamped row is never
-- published twice.
ALTER TABLE lot_excursions ADD COLUMN IF NOT EXISTS published_at timestamptz;

-- The severity processor's lot state (wafers seen, their patterns and yields,
-- excursions emitted) as one document per lot. It is written in the same
-- transaction as the wafer's effects are confirmed, so a restarted processor
-- resumes from exactly what was committed, on any broker.
ALTER TABLE lot_state ADD COLUMN IF NOT EXISTS state jsonb NOT NULL DEFAULT '{}';
