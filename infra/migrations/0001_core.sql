-- Core pipeline tables. Every table has a natural key so that sinks can
-- upsert: a replay or a crash between "write" and "commit offset" never
-- creates a second row for the same fact.

-- One row per wafer-test completion event (a retest is a new event).
CREATE TABLE wafers (
    event_id          text PRIMARY KEY,
    lot_id            text NOT NULL,
    sublot_id         text,
    wafer_id          text NOT NULL,
    product           text NOT NULL,
    tester            text NOT NULL,
    test_program      text NOT NULL,
    test_program_rev  text,
    facility          text,
    test_head         integer,
    start_time        timestamptz NOT NULL,
    end_time          timestamptz NOT NULL,
    grid_rows         integer NOT NULL,
    grid_cols         integer NOT NULL,
    total_dies        integer NOT NULL,
    failing_dies      integer NOT NULL,
    diameter_mm       double precision,
    die_width_mm      double precision,
    die_height_mm     double precision,
    source_uri        text,
    source_format     text NOT NULL,
    lane              text NOT NULL DEFAULT 'LIVE',
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wafers_lot_idx ON wafers (lot_id, wafer_id);
CREATE INDEX wafers_end_time_idx ON wafers (end_time);

-- Inference results, one per wafer event and model version: a backfill with
-- another model adds rows instead of overwriting live results.
CREATE TABLE inference_results (
    source_event_id  text NOT NULL REFERENCES wafers (event_id),
    model_version    text NOT NULL,
    result_event_id  text NOT NULL UNIQUE,
    label            text NOT NULL,
    pattern_probs    jsonb NOT NULL,
    patterns         text[] NOT NULL,
    mask_uri         text NOT NULL,
    mean_entropy     double precision NOT NULL,
    margin           double precision NOT NULL,
    bald             double precision,
    embedding        real[] NOT NULL,
    inference_ms     double precision NOT NULL,
    lane             text NOT NULL DEFAULT 'LIVE',
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_event_id, model_version)
);

CREATE TABLE clusters (
    source_event_id  text NOT NULL,
    model_version    text NOT NULL,
    cluster_index    integer NOT NULL,
    pattern          text NOT NULL,
    die_count        integer NOT NULL,
    area_fraction    double precision NOT NULL,
    centroid_row     double precision NOT NULL,
    centroid_col     double precision NOT NULL,
    centroid_x_mm    double precision,
    centroid_y_mm    double precision,
    bbox             integer[] NOT NULL,
    compactness      double precision NOT NULL,
    polygon          jsonb NOT NULL,
    PRIMARY KEY (source_event_id, model_version, cluster_index),
    FOREIGN KEY (source_event_id, model_version)
        REFERENCES inference_results (source_event_id, model_version)
);

CREATE TABLE assessments (
    source_event_id        text NOT NULL,
    model_version          text NOT NULL,
    assessment_event_id    text NOT NULL UNIQUE,
    lot_id                 text NOT NULL,
    wafer_id               text NOT NULL,
    product                text NOT NULL,
    dominant_pattern       text NOT NULL,
    patterns               text[] NOT NULL,
    total_dies             integer NOT NULL,
    failing_dies           integer NOT NULL,
    affected_dies          integer NOT NULL,
    yield_pct              double precision NOT NULL,
    coverage_pct           double precision NOT NULL,
    defect_density_per_cm2 double precision,
    edge_ratio             double precision NOT NULL,
    quadrant_fail_counts   integer[] NOT NULL,
    cluster_count          integer NOT NULL,
    severity_score         double precision NOT NULL,
    severity_level         text NOT NULL,
    lane                   text NOT NULL DEFAULT 'LIVE',
    assessed_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_event_id, model_version)
);
CREATE INDEX assessments_lot_idx ON assessments (lot_id);

-- Lot-level state mirrored from the severity processor's table, for queries.
CREATE TABLE lot_state (
    lot_id          text PRIMARY KEY,
    product         text NOT NULL,
    wafer_count     integer NOT NULL,
    mean_yield_pct  double precision NOT NULL,
    pattern_counts  jsonb NOT NULL,
    excursions      jsonb NOT NULL DEFAULT '[]',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Lot excursions: once per lot and cause (and pattern for repeated patterns).
CREATE TABLE lot_excursions (
    event_id     text NOT NULL UNIQUE,
    lot_id       text NOT NULL,
    cause        text NOT NULL,
    pattern      text NOT NULL DEFAULT '',
    detail       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lot_id, cause, pattern)
);

-- Effects that have no natural key of their own are recorded here in the
-- same transaction, keyed by the consumer group and the event id.
CREATE TABLE processed_events (
    consumer_group  text NOT NULL,
    event_id        text NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
