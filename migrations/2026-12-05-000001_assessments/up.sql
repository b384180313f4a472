-- Assessments: admin-owned exam definitions (a bank, a design, a feedback policy, a window
-- and an attempt limit). Students start exams of an assessment and send no design.
CREATE TABLE assessments (
    id                       BIGSERIAL PRIMARY KEY,
    name                     TEXT NOT NULL,
    item_bank_id             BIGINT NOT NULL REFERENCES item_banks (id),
    -- The ExamDesignInput with every default written out; never updated.
    design                   JSONB NOT NULL,
    feedback                 TEXT NOT NULL DEFAULT 'ESTIMATES'
                             CHECK (feedback IN ('ESTIMATES', 'FINAL', 'NONE')),
    -- NULL: unlimited.
    max_attempts_per_student INTEGER CHECK (max_attempts_per_student >= 1),
    opens_at                 TIMESTAMPTZ,
    closes_at                TIMESTAMPTZ,
    status                   TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'ARCHIVED')),
    created_by               TEXT NOT NULL,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    archived_at              TIMESTAMPTZ,
    CHECK (opens_at IS NULL OR closes_at IS NULL OR opens_at < closes_at)
);

-- Exams of the first version keep their stored design and have no assessment.
ALTER TABLE exam_sessions
    ADD COLUMN assessment_id  BIGINT REFERENCES assessments (id),
    -- 1, 2, ... per (assessment, student): the attempt limit's backstop.
    ADD COLUMN attempt_number INTEGER CHECK (attempt_number >= 1),
    -- The assessment's feedback policy, copied at start (assessments never change it).
    ADD COLUMN feedback       TEXT NOT NULL DEFAULT 'ESTIMATES'
                              CHECK (feedback IN ('ESTIMATES', 'FINAL', 'NONE'));

CREATE UNIQUE INDEX exam_sessions_attempt_number_idx
    ON exam_sessions (assessment_id, student_id, attempt_number)
    WHERE assessment_id IS NOT NULL;
-- At most one running exam per student and assessment: a second start resumes it.
CREATE UNIQUE INDEX exam_sessions_one_active_idx
    ON exam_sessions (assessment_id, student_id)
    WHERE assessment_id IS NOT NULL AND status = 'ACTIVE';
