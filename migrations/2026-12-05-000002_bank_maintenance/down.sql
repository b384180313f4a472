ALTER TABLE exam_sessions DROP COLUMN bank_revision;
ALTER TABLE item_banks DROP COLUMN revision;
ALTER TABLE items DROP COLUMN added_revision, DROP COLUMN retired_at, DROP COLUMN status;
