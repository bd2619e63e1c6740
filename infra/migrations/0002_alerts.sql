-- 0002_alerts: the alert notifier's ledger.
--
-- Why in PostgreSQL: every alert and every delivery attempt must be auditable
-- ("was the FA engineer told about wafer 07, when, and did it arrive?") and
-- survive notifier restarts. The UNIQUE key on (event_id, rule, channel,
-- recipient) is what makes a replayed Kafka event a no-op: the second insert
-- conflicts, so no second row and no second delivery can exist.

CREATE TABLE alerts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     TEXT        NOT NULL,
    rule         TEXT        NOT NULL,
    channel      TEXT        NOT NULL,
    recipient    TEXT        NOT NULL,
    lot_id       TEXT        NOT NULL,
    wafer_id     TEXT,                       -- NULL for lot-excursion alerts
    severity     TEXT        NOT NULL
        CHECK (severity IN ('info', 'minor', 'major', 'critical')),
    status       TEXT        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'suppressed', 'digested')),
    reason       TEXT,                       -- why suppressed/digested/failed
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ,                -- for 'digested': when the digest went out
    acked_at     TIMESTAMPTZ,
    acked_by     TEXT,
    CONSTRAINT alerts_event_target_key UNIQUE (event_id, rule, channel, recipient),
    CONSTRAINT alerts_ack_complete CHECK ((acked_at IS NULL) = (acked_by IS NULL))
);

-- `waferstream alerts list` filters by status and lot, newest first.
CREATE INDEX alerts_status_created_idx ON alerts (status, created_at DESC);
CREATE INDEX alerts_lot_idx ON alerts (lot_id, created_at DESC);

CREATE TABLE alert_attempts (
    alert_id BIGINT      NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    attempt  INTEGER     NOT NULL CHECK (attempt > 0),
    at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    ok       BOOLEAN     NOT NULL,
    error    TEXT,                           -- secret-free failure reason
    PRIMARY KEY (alert_id, attempt),
    CONSTRAINT alert_attempts_error_iff_failed CHECK (ok = (error IS NULL))
);
