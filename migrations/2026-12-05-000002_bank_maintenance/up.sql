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
