DROP INDEX exam_sessions_item_bank_id_idx;
DROP INDEX attempts_item_id_idx;
ALTER TABLE attempts DROP COLUMN score;
ALTER TABLE items DROP COLUMN enemy_group, DROP COLUMN scoring, DROP COLUMN thresholds, DROP COLUMN model;
