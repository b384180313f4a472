//! Item banks: validation of new banks (every field a client can send), their creation
//! in one transaction, and the per-instance cache lookups the exam flow uses.
//!
//! Owns what a valid bank is; must not touch exams or Redis.

use std::sync::Arc;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::Deserialize;

use super::*;
use crate::error::{AppError, AppResult};
use crate::ids::BankId;
use crate::irt::ItemParams;
use crate::storage::bank_cache::Bank;
use crate::storage::queries::{self};

/// Largest bank accepted in one request.
pub const MAX_BANK_ITEMS: usize = 100_000;

/// Longest accepted string field (names, ids, keys, responses), in bytes.
pub const MAX_TEXT_LEN: usize = 10_000;

/// One item of a new bank, before validation.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBankItem {
    /// The author's id, unique in the bank.
    pub external_id: String,
    /// Discrimination.
    #[serde(default = "one")]
    pub a: f64,
    /// Difficulty (a pretest item may omit it: NaN, stored as 0 until calibrated).
    #[serde(default = "not_given")]
    pub b: f64,
    /// Lower asymptote (guessing).
    #[serde(default)]
    pub c: f64,
    /// Upper asymptote (slipping).
    #[serde(default = "one")]
    pub d: f64,
    /// Content area.
    #[serde(default)]
    pub content_area: Option<String>,
    /// What the student sees.
    pub content: serde_json::Value,
    /// The correct response.
    pub answer_key: String,
    /// The response model.
    #[serde(default)]
    pub model: ItemModel,
    /// Polytomous thresholds.
    #[serde(default)]
    pub thresholds: Option<Vec<f64>>,
    /// Polytomous scoring: response → category score.
    #[serde(default)]
    pub scoring: Option<serde_json::Value>,
    /// Enemy group.
    #[serde(default)]
    pub enemy_group: Option<String>,
    /// Operational (selected and scored) or pretest (seeded, unscored, calibrated later).
    #[serde(default)]
    pub status: ItemStatus,
}

pub(super) fn one() -> f64 {
    1.0
}

/// A parameter the author left out.
fn not_given() -> f64 {
    f64::NAN
}

/// A new bank, before validation.
#[derive(Clone, Debug)]
pub struct NewBank {
    /// Its name.
    pub name: String,
    /// The scaling constant D (1.0, or 1.702 to approximate the normal ogive).
    pub scaling_constant: f64,
    /// Its items.
    pub items: Vec<NewBankItem>,
}

/// A bank as clients see it.
#[derive(Clone, Debug)]
pub struct BankInfo {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Number of items.
    pub item_count: i64,
    /// The scaling constant D.
    pub scaling_constant: f64,
}

impl ExamService {
    /// Validates and stores a new bank with all its items, atomically.
    pub async fn create_item_bank(&self, bank: NewBank) -> AppResult<BankInfo> {
        create_item_bank(&self.db, bank).await
    }

    /// Adds items to an existing bank (admin), validated as a new bank's are; an
    /// `externalId` already in the bank is `BAD_USER_INPUT`. Exams started before keep
    /// their items; new ones may be presented the new operational items.
    pub async fn add_items(&self, bank_id: BankId, items: Vec<NewBankItem>) -> AppResult<BankInfo> {
        let bank_id = bank_id.0;
        let new_items = validate_items(&items)?;
        let added = self
            .db
            .run(async |conn| {
                conn.transaction(async |conn| {
                    queries::add_bank_items(conn, bank_id, new_items).await
                })
                .await
                .map_err(|e| match e {
                    diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    ) => AppError::bad_input(
                        "an item with one of these externalIds is already in the bank",
                    ),
                    other => other.into(),
                })
            })
            .await?;
        let Some((_, count)) = added else {
            return Err(AppError::NotFound(format!(
                "item bank {bank_id} does not exist"
            )));
        };
        self.banks.forget(bank_id);
        tracing::info!(bank.id = bank_id, items = count, "items added");
        self.item_bank(BankId(bank_id)).await
    }

    /// Retires an item (admin): exams started from now on never present it; running exams
    /// are unaffected. `false` when it was retired already.
    pub async fn retire_item(&self, item_id: crate::ids::ItemId) -> AppResult<bool> {
        let item_id = item_id.0;
        let now = chrono::Utc::now();
        let (bank_id, retired) = self
            .db
            .run(async |conn| {
                let retired = conn
                    .transaction(async |conn| queries::retire_item(conn, item_id, now).await)
                    .await?;
                Ok(retired)
            })
            .await?
            .ok_or_else(|| AppError::NotFound(format!("item {item_id} does not exist")))?;
        self.banks.forget(bank_id);
        if retired {
            tracing::info!(item.id = item_id, bank.id = bank_id, "item retired");
        }
        Ok(retired)
    }

    /// A bank's public description.
    pub async fn item_bank(&self, bank_id: BankId) -> AppResult<BankInfo> {
        let bank_id = bank_id.0;
        let bank = self
            .db
            .run(async |conn| self.bank(conn, bank_id, 0).await)
            .await?;
        Ok(bank_info(&bank))
    }

    /// Every bank's public description.
    pub async fn item_banks(&self) -> AppResult<Vec<BankInfo>> {
        let (rows, counts) = self
            .db
            .run(async |conn| {
                let rows = queries::list_item_banks(conn).await?;
                Ok((rows, queries::count_items_by_bank(conn).await?))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| BankInfo {
                item_count: counts.get(&row.id).copied().unwrap_or(0),
                id: row.id,
                name: row.name,
                scaling_constant: row.scaling_constant,
            })
            .collect())
    }

    /// The bank at revision `min_revision` or later (an exam's `bank_revision`; 0 when any
    /// copy will do).
    pub(super) async fn bank(
        &self,
        conn: &mut AsyncPgConnection,
        bank_id: i64,
        min_revision: i64,
    ) -> AppResult<Arc<Bank>> {
        self.banks
            .get(conn, bank_id, min_revision)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("item bank {bank_id} does not exist")))
    }

    /// A bank at its newest revision (items added, retired or promoted on any instance).
    pub(super) async fn newest_bank(
        &self,
        conn: &mut AsyncPgConnection,
        bank_id: i64,
    ) -> AppResult<Arc<Bank>> {
        let revision = queries::bank_revision(conn, bank_id).await?.unwrap_or(0);
        self.bank(conn, bank_id, revision).await
    }
}

/// Validates and stores a new bank with all its items, atomically.
pub async fn create_item_bank(db: &Db, bank: NewBank) -> AppResult<BankInfo> {
    let new_items = validate_bank(&bank)?;
    let new_bank = queries::NewItemBank {
        name: bank.name.trim(),
        scaling_constant: bank.scaling_constant,
    };
    let (row, count) = db
        .run(async |conn| {
            Ok(conn
                .transaction(async |conn| {
                    queries::insert_item_bank(conn, &new_bank, new_items).await
                })
                .await?)
        })
        .await?;
    tracing::info!(bank.id = row.id, items = count, "item bank created");
    Ok(BankInfo {
        id: row.id,
        name: row.name,
        item_count: count as i64,
        scaling_constant: row.scaling_constant,
    })
}

pub(super) fn bank_info(bank: &Bank) -> BankInfo {
    BankInfo {
        id: bank.id,
        name: bank.name.clone(),
        item_count: bank.items.len() as i64,
        scaling_constant: bank.scaling_constant,
    }
}

/// Whether a JSON value holds a NUL character in a string or key (Postgres cannot store
/// it in `jsonb`).
pub(super) fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
        }
        _ => false,
    }
}

/// Refuses text that Postgres cannot store (NUL characters), naming the field.
pub(crate) fn check_text(text: &str, field: &str) -> AppResult<()> {
    if text.contains('\0') {
        return Err(AppError::bad_input(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Checks a new bank and returns its rows (bank id filled in on insert).
pub fn validate_bank(bank: &NewBank) -> AppResult<Vec<queries::NewItem>> {
    let name = bank.name.trim();
    if name.is_empty() || name.len() > 256 {
        return Err(AppError::bad_input("the bank name must be 1 to 256 bytes"));
    }
    check_text(name, "name")?;
    if !(bank.scaling_constant.is_finite()
        && bank.scaling_constant > 0.0
        && bank.scaling_constant <= 10.0)
    {
        return Err(AppError::bad_input("scalingConstant must be in (0, 10]"));
    }
    validate_items(&bank.items)
}

/// Checks the items of a new bank, or of items added to one, and returns their rows (bank
/// id filled in on insert).
pub fn validate_items(items: &[NewBankItem]) -> AppResult<Vec<queries::NewItem>> {
    if items.is_empty() || items.len() > MAX_BANK_ITEMS {
        return Err(AppError::bad_input(format!(
            "a bank holds 1 to {MAX_BANK_ITEMS} items"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            let at = |msg: &str| {
                AppError::bad_input(format!("items[{n}] ({:?}): {msg}", item.external_id))
            };
            if item.external_id.trim().is_empty() || item.external_id.len() > 256 {
                return Err(at("externalId must be 1 to 256 bytes"));
            }
            if !seen.insert(item.external_id.as_str()) {
                return Err(at("duplicate externalId"));
            }
            let texts = [
                Some(item.external_id.as_str()),
                Some(item.answer_key.as_str()),
                item.content_area.as_deref(),
                item.enemy_group.as_deref(),
            ];
            if texts.into_iter().flatten().any(|t| t.contains('\0'))
                || json_has_nul(&item.content)
                || item.scoring.as_ref().is_some_and(json_has_nul)
            {
                return Err(at("text must not contain NUL characters"));
            }
            // A pretest item's difficulty may be unknown until it is calibrated.
            let b = if item.b.is_nan() && item.status == ItemStatus::Pretest {
                0.0
            } else {
                item.b
            };
            if b.is_nan() {
                return Err(at("b is required (only pretest items may omit it)"));
            }
            check_item(&NewBankItem { b, ..item.clone() }).map_err(|m| at(&m))?;
            if item.answer_key.is_empty() || item.answer_key.len() > MAX_TEXT_LEN {
                return Err(at("answerKey must be 1 to 10000 bytes"));
            }
            if item.content_area.as_ref().is_some_and(|c| c.len() > 256) {
                return Err(at("contentArea must be at most 256 bytes"));
            }
            if item
                .enemy_group
                .as_ref()
                .is_some_and(|c| c.is_empty() || c.len() > 256)
            {
                return Err(at("enemyGroup must be 1 to 256 bytes"));
            }
            if item.content.to_string().len() > 100_000 {
                return Err(at("content must be at most 100000 bytes of JSON"));
            }
            Ok(queries::NewItem {
                item_bank_id: 0,
                external_id: item.external_id.clone(),
                a: item.a,
                b,
                c: item.c,
                d: item.d,
                content_area: item.content_area.clone(),
                content: item.content.clone(),
                answer_key: item.answer_key.clone(),
                model: item.model,
                thresholds: item.thresholds.clone(),
                scoring: item.scoring.clone(),
                enemy_group: item.enemy_group.clone(),
                status: item.status,
                added_revision: 0,
            })
        })
        .collect()
}

/// Checks one item's model, parameters and scoring.
pub(super) fn check_item(item: &NewBankItem) -> Result<(), String> {
    if !item.b.is_finite() || item.b.abs() > 10.0 {
        return Err("b must be in [-10, 10]".into());
    }
    if item.model == ItemModel::Dichotomous {
        if item.thresholds.is_some() || item.scoring.is_some() {
            return Err("thresholds and scoring are for GRM and GPCM items only".into());
        }
        return check_params(&ItemParams {
            a: item.a,
            b: item.b,
            c: item.c,
            d: item.d,
        });
    }
    let thresholds = item
        .thresholds
        .as_ref()
        .ok_or("a polytomous item needs thresholds")?;
    if !(item.a.is_finite() && item.a > 0.0 && item.a <= 10.0) {
        return Err("a must be in (0, 10]".into());
    }
    if thresholds.iter().any(|t| !t.is_finite() || t.abs() > 10.0) {
        return Err("thresholds must be in [-10, 10]".into());
    }
    let model = match item.model {
        ItemModel::Grm => crate::irt::Item::grm(item.a, thresholds.clone()),
        _ => crate::irt::Item::gpcm(item.a, thresholds.clone()),
    };
    model.validate_at(0).map_err(|e| match e {
        crate::irt::IrtError::Polytomous { reason, .. } => reason.to_owned(),
        other => other.to_string(),
    })?;
    if let Some(scoring) = &item.scoring {
        let map = scoring
            .as_object()
            .ok_or("scoring must be an object of response -> category score")?;
        if map.is_empty() || map.len() > 256 {
            return Err("scoring must have 1 to 256 responses".into());
        }
        let categories = thresholds.len() as u64 + 1;
        if map
            .iter()
            .any(|(k, v)| k.len() > MAX_TEXT_LEN || v.as_u64().is_none_or(|s| s >= categories))
        {
            return Err(format!(
                "scoring values must be category scores 0..{}",
                categories - 1
            ));
        }
    }
    Ok(())
}

/// Checks one item's 4PL parameters.
pub(super) fn check_params(p: &ItemParams) -> Result<(), String> {
    if !(p.a.is_finite() && p.a > 0.0 && p.a <= 10.0) {
        return Err("a must be in (0, 10]".into());
    }
    if !(p.b.is_finite() && p.b.abs() <= 10.0) {
        return Err("b must be in [-10, 10]".into());
    }
    if !(p.c.is_finite() && (0.0..1.0).contains(&p.c)) {
        return Err("c must be in [0, 1)".into());
    }
    if !(p.d.is_finite() && p.d <= 1.0 && p.d > p.c) {
        return Err("d must be in (c, 1]".into());
    }
    Ok(())
}
