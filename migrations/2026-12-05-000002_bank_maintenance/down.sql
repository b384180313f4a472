DROP TABLE calibration_runs;
DROP INDEX attempts_pretest_item;
ALTER TABLE attempts DROP COLUMN pretest;
ALTER TABLE exam_sessions DROP COLUMN bank_revision;
ALTER TABLE item_banks DROP COLUMN revision;
ALTER TABLE items DROP COLUMN added_revision, DROP COLUMN retired_at, DROP COLUMN status;
