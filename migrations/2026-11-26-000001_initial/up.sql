-- Item banks are immutable once created: an exam's estimates can always be recomputed
-- from its attempts and the parameters of the items it saw.
CREATE TABLE item_banks (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL,
    scaling_constant DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE items (
    id           BIGSERIAL PRIMARY KEY,
    item_bank_id BIGINT NOT NULL REFERENCES item_banks (id) ON DELETE CASCADE,
    external_id  TEXT NOT NULL,
    a            DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    b            DOUBLE PRECISION NOT NULL,
    c            DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    d            DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    content_area TEXT,
    content      JSONB NOT NULL,
    answer_key   TEXT NOT NULL,
    UNIQUE (item_bank_id, external_id)
);
CREATE INDEX items_item_bank_id_idx ON items (item_bank_id, id);

CREATE TABLE exam_sessions (
    id               BIGSERIAL PRIMARY KEY,
    student_id       TEXT NOT NULL,
    item_bank_id     BIGINT NOT NULL REFERENCES item_banks (id),
    status           TEXT NOT NULL DEFAULT 'ACTIVE'
                     CHECK (status IN ('ACTIVE', 'COMPLETED', 'ABANDONED')),
    -- The whole exam design (estimator, stopping rule, randomesque, seed) as JSON, so a
    -- rebuild from Postgres reproduces every estimate and every item choice.
    config           JSONB NOT NULL,
    theta            DOUBLE PRECISION NOT NULL,
    standard_error   DOUBLE PRECISION NOT NULL,
    items_completed  INTEGER NOT NULL DEFAULT 0,
    current_item_id  BIGINT REFERENCES items (id),
    stop_reason      TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at     TIMESTAMPTZ
);
CREATE INDEX exam_sessions_student_id_idx ON exam_sessions (student_id);
CREATE INDEX exam_sessions_active_idx ON exam_sessions (status) WHERE status = 'ACTIVE';

-- One row per recorded answer, with the estimate after it and what came next, so a
-- repeated submission can be answered with exactly the recorded result.
CREATE TABLE attempts (
    id               BIGSERIAL PRIMARY KEY,
    exam_session_id  BIGINT NOT NULL REFERENCES exam_sessions (id) ON DELETE CASCADE,
    item_id          BIGINT NOT NULL REFERENCES items (id),
    position         INTEGER NOT NULL CHECK (position >= 1),
    response         TEXT NOT NULL,
    correct          BOOLEAN NOT NULL,
    theta            DOUBLE PRECISION NOT NULL,
    standard_error   DOUBLE PRECISION NOT NULL,
    next_item_id     BIGINT REFERENCES items (id),
    completed        BOOLEAN NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (exam_session_id, position),
    UNIQUE (exam_session_id, item_id)
);
