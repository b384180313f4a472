//! The service's GraphQL API over HTTP: one shared keep-alive client, the operations the
//! virtual students use, and the classification of failures.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::stats::OpStats;

/// `startExam`, selecting only what a student needs to go on.
pub const START_EXAM: &str = "mutation($input: StartExamInput!) { startExam(input: $input) { \
    examSession { id status itemsCompleted } nextItem { id itemId position content } } }";
/// `submitAnswer`, selecting what a client typically shows after an answer.
pub const SUBMIT_ANSWER: &str = "mutation($input: SubmitAnswerInput!) { submitAnswer(input: \
    $input) { theta standardError itemsCompleted completed nextItem { id itemId position content } } }";
/// `createItemBank`.
pub const CREATE_BANK: &str =
    "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id itemCount } }";
/// `createAssessment`: the design the virtual students take exams of.
pub const CREATE_ASSESSMENT: &str = "mutation($input: CreateAssessmentInput!) { \
    createAssessment(input: $input) { id } }";
/// `itemBank`, to check a reused bank.
pub const ITEM_BANK: &str = "query($id: ID!) { itemBank(id: $id) { id itemCount } }";

/// Why a call failed, as counted in the report.
#[derive(Debug, Clone)]
pub struct CallError {
    /// The class: a GraphQL `extensions.code`, `http:<status>`, `transport:<kind>` or
    /// `client:<what>`.
    pub class: String,
    /// A human-readable detail (first error message).
    pub detail: String,
}

impl CallError {
    fn new(class: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            detail: detail.into(),
        }
    }

    /// A response that lacks what the operation must return.
    pub fn bad_response(what: &str, response: &Value) -> Self {
        let mut text = response.to_string();
        text.truncate(300);
        Self::new("client:bad_response", format!("{what}: {text}"))
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.detail)
    }
}

/// The GraphQL endpoint and the one HTTP client every task shares.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    endpoint: String,
}

impl Api {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8000`) keeping up to `pool` idle
    /// connections, so every concurrent task reuses its own keep-alive connection.
    pub fn new(base_url: &str, pool: usize, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(300))
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            endpoint: format!("{}/graphql", base_url.trim_end_matches('/')),
        })
    }

    /// Posts one operation; returns its `data`, or the first error's class.
    pub async fn call(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, CallError> {
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        let value: Value = match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) if !status.is_success() => {
                return Err(CallError::new(
                    format!("http:{}", status.as_u16()),
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>(),
                ));
            }
            Err(e) => return Err(CallError::new("client:invalid_json", e.to_string())),
        };
        if let Some(first) = value["errors"].as_array().and_then(|e| e.first()) {
            let code = first["extensions"]["code"]
                .as_str()
                .unwrap_or("graphql:no_code")
                .to_owned();
            let message = first["message"].as_str().unwrap_or_default().to_owned();
            return Err(CallError::new(code, message));
        }
        if !status.is_success() {
            return Err(CallError::new(format!("http:{}", status.as_u16()), ""));
        }
        Ok(value["data"].clone())
    }

    /// Like [`Api::call`], recording the latency or the error class in `stats`.
    pub async fn timed(
        &self,
        stats: &mut OpStats,
        token: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, CallError> {
        let started = Instant::now();
        let result = self.call(token, query, variables).await;
        match &result {
            Ok(_) => stats.ok(started.elapsed()),
            Err(e) => stats.error(&e.class),
        }
        result
    }
}

fn transport(error: reqwest::Error) -> CallError {
    let kind = if error.is_timeout() {
        "transport:timeout"
    } else if error.is_connect() {
        "transport:connect"
    } else if error.is_body() || error.is_decode() {
        "transport:body"
    } else if error.is_request() {
        "transport:request"
    } else {
        "transport:other"
    };
    CallError::new(kind, error.to_string())
}

/// 3PL parameters of one item, as the load generator knows them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Discrimination.
    pub a: f64,
    /// Difficulty.
    pub b: f64,
    /// Guessing.
    pub c: f64,
}

impl Params {
    /// P(correct | theta) with the bank's scaling constant 1.
    pub fn p_correct(&self, theta: f64) -> f64 {
        self.c + (1.0 - self.c) / (1.0 + (-self.a * (theta - self.b)).exp())
    }
}

/// An item as presented: its id, and the parameters the generator embedded in its
/// content (absent for banks it did not create: such items are answered with p = 0.5).
#[derive(Clone, Debug)]
pub struct Presented {
    /// Item id.
    pub id: String,
    /// Parameters read back from the content.
    pub params: Option<Params>,
}

impl Presented {
    /// The `nextItem` of a payload (`None` when the exam is over or the field is null).
    pub fn from_payload(next_item: &Value) -> Option<Self> {
        let id = next_item["itemId"].as_str()?.to_owned();
        let p = &next_item["content"]["irt"];
        let params = match (p["a"].as_f64(), p["b"].as_f64(), p["c"].as_f64()) {
            (Some(a), Some(b), Some(c)) => Some(Params { a, b, c }),
            _ => None,
        };
        Some(Self { id, params })
    }
}

/// A deterministic 3PL bank: a in [0.6, 2.2], b in [-2.5, 2.5], c in [0.05, 0.25], each
/// rounded to `decimals` (4 is what calibration software reports, as in the catR reference
/// cases; full-precision random numbers would make every cached state ~70% longer).
pub fn bank_params(n: usize, decimals: u32) -> Vec<Params> {
    let scale = 10f64.powi(decimals as i32);
    let round = |x: f64| (x * scale).round() / scale;
    (0..n)
        .map(|i| {
            let x = i as f64;
            Params {
                a: round(0.6 + (x * 0.37).sin().abs() * 1.6),
                b: round(-2.5 + 5.0 * (x * 0.618_033_988_7).fract()),
                c: round(0.05 + 0.2 * (x * 0.29).cos().abs()),
            }
        })
        .collect()
}

/// Creates a bank of `n` 3PL items (answer key "A"; the parameters are also written into
/// each item's content so that students can answer by the model); returns its id.
pub async fn create_bank(
    api: &Api,
    admin: &str,
    n: usize,
    decimals: u32,
    name: &str,
) -> Result<String, CallError> {
    let items: Vec<Value> = bank_params(n, decimals)
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let area = ["algebra", "geometry", "statistics"][i % 3];
            json!({
                "externalId": format!("load-{i}"),
                "a": p.a, "b": p.b, "c": p.c,
                "contentArea": area,
                "content": {
                    "stem": format!("Load-test question {i}"),
                    "options": ["A", "B", "C", "D"],
                    "irt": {"a": p.a, "b": p.b, "c": p.c}
                },
                "answerKey": "A"
            })
        })
        .collect();
    let data = api
        .call(
            admin,
            CREATE_BANK,
            json!({"input": {"name": name, "items": items}}),
        )
        .await?;
    data["createItemBank"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CallError::bad_response("createItemBank.id", &data))
}

/// Checks that bank `id` exists; returns its item count.
pub async fn check_bank(api: &Api, admin: &str, id: &str) -> Result<u64, CallError> {
    let data = api.call(admin, ITEM_BANK, json!({"id": id})).await?;
    data["itemBank"]["itemCount"]
        .as_u64()
        .ok_or_else(|| CallError::bad_response("itemBank.itemCount", &data))
}

/// A started exam: its id and first item.
pub struct Started {
    /// Exam id.
    pub exam_id: String,
    /// The first item (`None`: completed at once).
    pub item: Option<Presented>,
}

/// Creates an assessment of `bank` whose exams have `max_items` items, with unlimited
/// attempts (a virtual student starts again when done); returns its id.
pub async fn create_assessment(
    api: &Api,
    admin: &str,
    bank: &str,
    max_items: u32,
) -> Result<String, CallError> {
    let data = api
        .call(
            admin,
            CREATE_ASSESSMENT,
            json!({"input": {"name": "loadtest", "itemBankId": bank,
                "design": {"maxItems": max_items}, "maxAttemptsPerStudent": null}}),
        )
        .await?;
    data["createAssessment"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CallError::bad_response("createAssessment.id", &data))
}

/// `startExam` of `assessment`, timed into `stats`.
pub async fn start_exam(
    api: &Api,
    stats: &mut OpStats,
    token: &str,
    assessment: &str,
) -> Result<Started, CallError> {
    let data = api
        .timed(
            stats,
            token,
            START_EXAM,
            json!({"input": {"assessmentId": assessment}}),
        )
        .await?;
    let payload = &data["startExam"];
    let exam_id = payload["examSession"]["id"]
        .as_str()
        .ok_or_else(|| CallError::bad_response("startExam.examSession.id", &data))?
        .to_owned();
    Ok(Started {
        exam_id,
        item: Presented::from_payload(&payload["nextItem"]),
    })
}

/// What one answer returned.
pub struct Answered {
    /// Answers recorded, this one included.
    pub items_completed: i64,
    /// Whether the exam is over.
    pub completed: bool,
    /// The next item.
    pub next: Option<Presented>,
}

/// `submitAnswer`, timed into `stats`.
pub async fn submit_answer(
    api: &Api,
    stats: &mut OpStats,
    token: &str,
    exam_id: &str,
    item_id: &str,
    response: &str,
) -> Result<Answered, CallError> {
    let data = api
        .timed(
            stats,
            token,
            SUBMIT_ANSWER,
            json!({"input": {"examSessionId": exam_id, "itemId": item_id, "response": response}}),
        )
        .await?;
    let payload = &data["submitAnswer"];
    let (Some(items_completed), Some(completed)) = (
        payload["itemsCompleted"].as_i64(),
        payload["completed"].as_bool(),
    ) else {
        return Err(CallError::bad_response("submitAnswer", &data));
    };
    Ok(Answered {
        items_completed,
        completed,
        next: Presented::from_payload(&payload["nextItem"]),
    })
}
