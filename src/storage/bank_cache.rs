//! Item banks held in memory per instance. An item's parameters never change once it is
//! operational (an exam's estimates must stay reproducible from its attempts), but a bank
//! grows (`addItems`), retires items and promotes pretest items: each such change
//! increments the bank's revision. Every exam records the revision it started at and only
//! ever selects items of that revision, so a cached bank serves an exam whenever its
//! revision is at least the exam's ([`BankCache::get`] reloads it otherwise); a start
//! always uses the newest revision.

use std::sync::Arc;

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;

use super::enums::{ItemModel, ItemStatus};
use super::queries;
use crate::engine::EngineBank;
use crate::irt::{Item, ItemParams, PolytomousItem, PolytomousModel};

/// One item's student-facing and scoring data (its model lives in [`Bank::engine`], at the same index).
#[derive(Clone, Debug)]
pub struct BankItem {
    /// Database id, the `ID` clients see.
    pub id: i64,
    /// The author's id for the item, unique in its bank.
    pub external_id: String,
    /// Content area, for content balancing and display.
    pub content_area: Option<String>,
    /// What the student sees (stem, options…), as authored.
    pub content: serde_json::Value,
    /// The correct response; never sent to students.
    pub answer_key: String,
    /// Response → category score, for polytomous items; never sent to students.
    pub scoring: Option<serde_json::Map<String, serde_json::Value>>,
    /// Never two items of one enemy group in an exam.
    pub enemy_group: Option<String>,
    /// Number of response categories (2 for dichotomous items).
    pub categories: u32,
    /// Whether the item is polytomous (GRM, GPCM): scored by category, even with only two
    /// categories, never against `answer_key`.
    pub polytomous: bool,
    /// Operational, or pretest (never selected by the engine, never scored).
    pub status: ItemStatus,
    /// Whether `retireItem` took it out of new exams.
    pub retired: bool,
    /// The bank revision that added it.
    pub added_revision: i64,
}

/// Why a response cannot be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("response {response:?} is not one of this item's options")]
pub struct UnknownResponse {
    /// The response given.
    pub response: String,
}

impl BankItem {
    /// The category score of `response`: for dichotomous items 1 when it equals the
    /// answer key (exact match) and 0 otherwise; for polytomous items (whatever their
    /// number of categories) the `scoring` entry of the response, or the response itself
    /// when it is a category number, and anything else is refused.
    pub fn score(&self, response: &str) -> Result<u32, UnknownResponse> {
        let unknown = || UnknownResponse {
            response: response.chars().take(64).collect(),
        };
        if !self.polytomous {
            return Ok(u32::from(response == self.answer_key));
        }
        let score = match &self.scoring {
            Some(map) => map.get(response).and_then(serde_json::Value::as_u64),
            None => response.trim().parse::<u64>().ok(),
        }
        .ok_or_else(unknown)?;
        u32::try_from(score)
            .ok()
            .filter(|s| *s < self.categories)
            .ok_or_else(unknown)
    }
}

/// The IRT model of a stored item row.
pub fn item_model(row: &queries::ItemRow) -> Item {
    let polytomous = |model| {
        Item::Polytomous(PolytomousItem {
            model,
            a: row.a,
            thresholds: row.thresholds.clone().unwrap_or_default(),
        })
    };
    match row.model {
        ItemModel::Grm => polytomous(PolytomousModel::Grm),
        ItemModel::Gpcm => polytomous(PolytomousModel::Gpcm),
        ItemModel::Dichotomous => Item::Dichotomous(ItemParams {
            a: row.a,
            b: row.b,
            c: row.c,
            d: row.d,
        }),
    }
}

/// A bank as the exam flow needs it: the engine's psychometric view, and each item's
/// content and scoring, indexed alike.
#[derive(Debug)]
pub struct Bank {
    /// Bank id.
    pub id: i64,
    /// Bank name.
    pub name: String,
    /// The scaling constant D of the logistic model.
    pub scaling_constant: f64,
    /// Items' content and scoring, indexed like `engine`.
    pub items: Vec<BankItem>,
    /// Models, ids, areas and enemy groups for the engine.
    pub engine: EngineBank,
    /// The bank revision this copy holds.
    pub revision: i64,
    /// `(added_revision, id)` of the items added after the bank was created, so that a
    /// step looks at those only (usually none) instead of the whole bank.
    added: Vec<(i64, i64)>,
}

impl Bank {
    /// Builds a bank from its rows.
    pub fn from_rows(bank: &queries::ItemBankRow, rows: Vec<queries::ItemRow>) -> Self {
        let models: Vec<Item> = rows.iter().map(item_model).collect();
        let engine = EngineBank::new(
            bank.scaling_constant,
            models,
            rows.iter().map(|r| r.id).collect(),
            rows.iter().map(|r| r.content_area.clone()).collect(),
            rows.iter().map(|r| r.enemy_group.clone()).collect(),
        );
        let items = rows
            .into_iter()
            .zip(&engine.items)
            .map(|(r, model)| BankItem {
                id: r.id,
                external_id: r.external_id,
                content_area: r.content_area,
                content: r.content,
                answer_key: r.answer_key,
                scoring: r.scoring.and_then(|s| match s {
                    serde_json::Value::Object(map) => Some(map),
                    _ => None,
                }),
                enemy_group: r.enemy_group,
                categories: model.categories() as u32,
                polytomous: matches!(model, Item::Polytomous(_)),
                status: r.status,
                retired: r.retired_at.is_some(),
                added_revision: r.added_revision,
            })
            .collect::<Vec<BankItem>>();
        let added = items
            .iter()
            .filter(|i| i.added_revision > 0)
            .map(|i| (i.added_revision, i.id))
            .collect();
        Self {
            id: bank.id,
            name: bank.name.clone(),
            scaling_constant: bank.scaling_constant,
            items,
            engine,
            revision: bank.revision,
            added,
        }
    }

    /// Items a new exam must never select: pretest and retired ones.
    pub fn unselectable(&self) -> impl Iterator<Item = i64> + '_ {
        self.items
            .iter()
            .filter(|i| i.status == ItemStatus::Pretest || i.retired)
            .map(|i| i.id)
    }

    /// Items an exam started at bank revision `revision` never selects: those added later.
    pub fn added_after(&self, revision: i64) -> impl Iterator<Item = i64> + '_ {
        self.added
            .iter()
            .filter(move |(added, _)| *added > revision)
            .map(|(_, id)| *id)
    }

    /// The index of an item id in this bank.
    pub fn index_of(&self, item_id: i64) -> Option<usize> {
        self.engine.index_of(item_id)
    }
}

/// Most items (over all banks) an instance keeps in memory; least recently used banks are
/// dropped beyond it and loaded again when needed.
pub const BANK_CACHE_ITEMS: u64 = 1_000_000;

/// Weighs a cached bank by its items (a bank costs memory in proportion to them).
#[derive(Clone)]
struct ByItems;

impl quick_cache::Weighter<i64, Arc<Bank>> for ByItems {
    fn weight(&self, _: &i64, bank: &Arc<Bank>) -> u64 {
        bank.items.len() as u64 + 1
    }
}

/// Why a bank could not be loaded.
enum LoadError {
    /// No such bank (not cached: it may be created later).
    Missing,
    /// Postgres failed.
    Query(diesel::result::Error),
}

/// The banks this instance has loaded: bounded by [`BANK_CACHE_ITEMS`], and loaded once
/// however many requests ask for a bank at the same time (single flight).
#[derive(Clone)]
pub struct BankCache {
    banks: Arc<quick_cache::sync::Cache<i64, Arc<Bank>, ByItems>>,
}

impl Default for BankCache {
    fn default() -> Self {
        Self {
            banks: Arc::new(quick_cache::sync::Cache::with_weighter(
                1_024,
                BANK_CACHE_ITEMS,
                ByItems,
            )),
        }
    }
}

impl BankCache {
    /// The bank at revision `min_revision` or later, from memory when the cached copy is
    /// recent enough, else from Postgres; `None` when it does not exist.
    pub async fn get(
        &self,
        conn: &mut AsyncPgConnection,
        bank_id: i64,
        min_revision: i64,
    ) -> QueryResult<Option<Arc<Bank>>> {
        // Twice at most: a load that was already under way may predate the revision asked for.
        for _ in 0..2 {
            if let Some(bank) = self.banks.get(&bank_id) {
                if bank.revision >= min_revision {
                    return Ok(Some(bank));
                }
                // Older than the exam (or start) asking: another instance changed the bank.
                self.banks.remove(&bank_id);
            }
            let loaded = self
                .banks
                .get_or_insert_async(&bank_id, async {
                    let row = queries::find_item_bank(conn, bank_id)
                        .await
                        .map_err(LoadError::Query)?
                        .ok_or(LoadError::Missing)?;
                    let items = queries::load_bank_items(conn, bank_id)
                        .await
                        .map_err(LoadError::Query)?;
                    Ok(Arc::new(Bank::from_rows(&row, items)))
                })
                .await;
            match loaded {
                Ok(bank) if bank.revision >= min_revision => return Ok(Some(bank)),
                Ok(_) => {}
                Err(LoadError::Missing) => return Ok(None),
                Err(LoadError::Query(e)) => return Err(e),
            }
        }
        Err(diesel::result::Error::NotFound)
    }

    /// Forgets a bank (this instance changed it).
    pub fn forget(&self, bank_id: i64) {
        self.banks.remove(&bank_id);
    }
}
