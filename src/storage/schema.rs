// @generated automatically by Diesel CLI.

diesel::table! {
    assessments (id) {
        id -> Int8,
        name -> Text,
        item_bank_id -> Int8,
        design -> Jsonb,
        feedback -> Text,
        max_attempts_per_student -> Nullable<Int4>,
        opens_at -> Nullable<Timestamptz>,
        closes_at -> Nullable<Timestamptz>,
        status -> Text,
        created_by -> Text,
        created_at -> Timestamptz,
        archived_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    attempts (id) {
        id -> Int8,
        exam_session_id -> Int8,
        item_id -> Int8,
        position -> Int4,
        response -> Text,
        correct -> Bool,
        theta -> Float8,
        standard_error -> Float8,
        next_item_id -> Nullable<Int8>,
        completed -> Bool,
        created_at -> Timestamptz,
        score -> Int4,
        pretest -> Bool,
    }
}

diesel::table! {
    calibration_runs (id) {
        id -> Int8,
        item_bank_id -> Int8,
        method -> Text,
        model -> Text,
        min_responses -> Int4,
        status -> Text,
        created_by -> Text,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        cycles -> Nullable<Int4>,
        items -> Jsonb,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    exam_sessions (id) {
        id -> Int8,
        student_id -> Text,
        item_bank_id -> Int8,
        status -> Text,
        config -> Jsonb,
        theta -> Float8,
        standard_error -> Float8,
        items_completed -> Int4,
        current_item_id -> Nullable<Int8>,
        stop_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        assessment_id -> Nullable<Int8>,
        attempt_number -> Nullable<Int4>,
        feedback -> Text,
        bank_revision -> Int8,
    }
}

diesel::table! {
    item_banks (id) {
        id -> Int8,
        name -> Text,
        scaling_constant -> Float8,
        created_at -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    items (id) {
        id -> Int8,
        item_bank_id -> Int8,
        external_id -> Text,
        a -> Float8,
        b -> Float8,
        c -> Float8,
        d -> Float8,
        content_area -> Nullable<Text>,
        content -> Jsonb,
        answer_key -> Text,
        model -> Text,
        thresholds -> Nullable<Array<Float8>>,
        scoring -> Nullable<Jsonb>,
        enemy_group -> Nullable<Text>,
        status -> Text,
        retired_at -> Nullable<Timestamptz>,
        added_revision -> Int8,
    }
}

diesel::joinable!(assessments -> item_banks (item_bank_id));
diesel::joinable!(attempts -> exam_sessions (exam_session_id));
diesel::joinable!(calibration_runs -> item_banks (item_bank_id));
diesel::joinable!(exam_sessions -> assessments (assessment_id));
diesel::joinable!(exam_sessions -> item_banks (item_bank_id));
diesel::joinable!(items -> item_banks (item_bank_id));

diesel::allow_tables_to_appear_in_same_query!(
    assessments,
    attempts,
    calibration_runs,
    exam_sessions,
    item_banks,
    items,
);
