DROP INDEX exam_sessions_one_active_idx;
DROP INDEX exam_sessions_attempt_number_idx;
ALTER TABLE exam_sessions DROP COLUMN feedback, DROP COLUMN attempt_number, DROP COLUMN assessment_id;
DROP TABLE assessments;
