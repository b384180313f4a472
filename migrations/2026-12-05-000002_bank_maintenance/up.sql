-- Bank maintenance: pretest items (seeded into live exams, never scored, calibrated and then
-- promoted), retired items (no longer presented to new exams), and a bank revision that every
-- change of a bank's items increments, so each instance knows when its cached copy is old.
ALTER TABLE items
    ADD COLUMN status     TEXT NOT NULL DEFAULT 'OPERATIONAL'
                          CHECK (status IN ('OPERATIONAL', 'PRETEST')),
    -- Set by retireItem: exams started from then on never present the item.
    ADD COLUMN retired_at TIMESTAMPTZ;

ALTER TABLE item_banks
    ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

-- The bank revision that added each item, and the revision each exam started at: an exam
-- only ever selects items its bank had when it started, so every instance serving it can
-- tell whether its cached copy of the bank is recent enough.
ALTER TABLE items
    ADD COLUMN added_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE exam_sessions
    ADD COLUMN bank_revision BIGINT NOT NULL DEFAULT 0;

-- Answers to pretest items: recorded like any other, never scored into theta.
ALTER TABLE attempts
    ADD COLUMN pretest BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX attempts_pretest_item ON attempts (item_id) WHERE pretest;

-- One calibration of a bank's pretest items: who asked, how, and the estimates.
CREATE TABLE calibration_runs (
    id            BIGSERIAL PRIMARY KEY,
    item_bank_id  BIGINT NOT NULL REFERENCES item_banks (id),
    method        TEXT NOT NULL CHECK (method IN ('FIXED_THETA', 'OEM', 'MEM')),
    model         TEXT NOT NULL CHECK (model IN ('TWO_PL', 'THREE_PL')),
    min_responses INTEGER NOT NULL CHECK (min_responses >= 1),
    status        TEXT NOT NULL DEFAULT 'RUNNING' CHECK (status IN ('RUNNING', 'DONE', 'FAILED')),
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ,
    -- EM cycles run (1 for FIXED_THETA and OEM).
    cycles        INTEGER,
    -- One object per pretest item: itemId, externalId, responses, and the estimates with
    -- their standard errors and fit when the item had minResponses responses.
    items         JSONB NOT NULL DEFAULT '[]',
    error         TEXT
);
CREATE INDEX calibration_runs_bank ON calibration_runs (item_bank_id, id DESC);
