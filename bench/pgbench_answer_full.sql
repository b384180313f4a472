-- pgbench_answer.sql plus the one statement the service runs that the headline script
-- leaves out: the look-up of an earlier attempt at the same item (replay detection),
-- inside the locked transaction. Variables: :sessions.
\set id random(1, :sessions)
BEGIN;
SELECT id, student_id, item_bank_id, status, config, theta, standard_error, items_completed,
       current_item_id, stop_reason, created_at, updated_at, completed_at,
       items_completed + 1 AS pos
  FROM exam_sessions WHERE id = :id FOR UPDATE \gset s_
\set item 1 + (:s_pos - 1) % 500
\set next 1 + :s_pos % 500
SELECT id, exam_session_id, item_id, position, response, correct, theta, standard_error,
       next_item_id, completed, created_at, score
  FROM attempts WHERE exam_session_id = :id AND item_id = :item LIMIT 1;
INSERT INTO attempts (exam_session_id, item_id, position, response, correct, theta,
                      standard_error, next_item_id, completed, score)
  VALUES (:id, :item, :s_pos, 'A', true, 0.25, 0.61, :next, false, 1)
  RETURNING id, exam_session_id, item_id, position, response, correct, theta, standard_error,
            next_item_id, completed, created_at, score;
UPDATE exam_sessions
   SET status = 'ACTIVE', theta = 0.25, standard_error = 0.61, items_completed = :s_pos,
       current_item_id = :next, stop_reason = NULL, updated_at = now(), completed_at = NULL
 WHERE id = :id
 RETURNING id, student_id, item_bank_id, status, config, theta, standard_error,
           items_completed, current_item_id, stop_reason, created_at, updated_at,
           completed_at;
END;
