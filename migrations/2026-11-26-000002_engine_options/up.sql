-- Polytomous items (GRM, GPCM), their response scoring, and enemy groups.
ALTER TABLE items
    ADD COLUMN model       TEXT NOT NULL DEFAULT 'DICHOTOMOUS'
                           CHECK (model IN ('DICHOTOMOUS', 'GRM', 'GPCM')),
    ADD COLUMN thresholds  DOUBLE PRECISION[],
    ADD COLUMN scoring     JSONB,
    ADD COLUMN enemy_group TEXT;

-- The category score of each answer (0/1 for dichotomous items); `correct` stays the
-- full-credit flag.
ALTER TABLE attempts ADD COLUMN score INTEGER NOT NULL DEFAULT 0;
UPDATE attempts SET score = 1 WHERE correct;

-- Exposure counts are rebuilt from these when Redis loses them.
CREATE INDEX attempts_item_id_idx ON attempts (item_id);
CREATE INDEX exam_sessions_item_bank_id_idx ON exam_sessions (item_bank_id);
