-- Fills the scratch database of bench/run.sh (already migrated with the service's own
-- migrations, so the tables, constraints and indexes are exactly the service's): one bank
-- of 500 items and :sessions active exam sessions, each with an exam design like the
-- service stores (EAP, MAX_INFO, maxItems 20) and its first item presented.
-- Usage: psql -v sessions=10000 -f bench/pgbench_setup.sql
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO item_banks (id, name, scaling_constant) VALUES (1, 'pgbench bank', 1.0);
INSERT INTO items (id, item_bank_id, external_id, a, b, c, d, content_area, content, answer_key)
SELECT i, 1, 'load-' || (i - 1),
       0.6 + abs(sin((i - 1) * 0.37)) * 1.6,
       -2.5 + 5.0 * (((i - 1) * 0.6180339887) - floor((i - 1) * 0.6180339887)),
       0.05 + 0.2 * abs(cos((i - 1) * 0.29)),
       1.0,
       (ARRAY['algebra', 'geometry', 'statistics'])[1 + (i - 1) % 3],
       jsonb_build_object('stem', 'Load-test question ' || (i - 1),
                          'options', jsonb_build_array('A', 'B', 'C', 'D')),
       'A'
FROM generate_series(1, 500) AS i;
SELECT setval('item_banks_id_seq', 1), setval('items_id_seq', 500) \g /dev/null
INSERT INTO exam_sessions (id, student_id, item_bank_id, status, config, theta,
                           standard_error, items_completed, current_item_id)
SELECT s, 'pgbench-student-' || s, 1, 'ACTIVE',
       jsonb_build_object(
         'estimator', jsonb_build_object('method', 'EAP', 'prior_mean', 0.0, 'prior_sd', 1.0,
             'quadrature_points', 33, 'theta_min', -4.0, 'theta_max', 4.0, 'prior', 'NORMAL',
             'prior_lower', NULL, 'prior_upper', NULL, 'constant_pattern_rule', 'BOUND',
             'standard_error_type', 'CLASSIC'),
         'selection_rule', 'MAX_INFO', 'max_items', 20, 'min_items', 1, 'se_target', NULL,
         'initial_theta', 0.0, 'randomesque', 1, 'seed', (s * 2654435761) % 4294967296,
         'exposure', NULL, 'content_balance', NULL, 'start_item_ids', '[]'::jsonb,
         'cut_score', NULL, 'confidence_level', 0.95, 'min_information', NULL,
         'max_duration_seconds', NULL, 'ineligible_item_ids', '[]'::jsonb),
       0.0, 1.0, 0, 1 + s % 500
FROM generate_series(1, :sessions) AS s;
SELECT setval('exam_sessions_id_seq', :sessions) \g /dev/null
COMMIT;
VACUUM ANALYZE;
