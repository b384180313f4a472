//! Item banks held in memory per instance. Banks are immutable once created (an exam's
//! estimates must stay reproducible from its attempts), so a loaded bank never goes stale
//! and needs no invalidation; only the first request for a bank reads Postgres.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;

use super::queries;
use crate::irt::ItemParams;

/// One item's student-facing and scoring data (parameters live in [`Bank::params`]).
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
}

/// A bank ready for the engine: items in id order and their parameters side by side, so
/// the selection loop reads one contiguous slice.
#[derive(Debug)]
pub struct Bank {
    /// Bank id.
    pub id: i64,
    /// Bank name.
    pub name: String,
    /// The scaling constant D of the logistic model.
    pub scaling_constant: f64,
    /// Items, indexed like `params`.
    pub items: Vec<BankItem>,
    /// IRT parameters, indexed like `items`.
    pub params: Vec<ItemParams>,
    /// Item id → index.
    index: HashMap<i64, usize>,
}

impl Bank {
    /// Builds a bank from its rows.
    pub fn from_rows(bank: &queries::ItemBankRow, rows: Vec<queries::ItemRow>) -> Self {
        let params = rows
            .iter()
            .map(|r| ItemParams {
                a: r.a,
                b: r.b,
                c: r.c,
                d: r.d,
            })
            .collect();
        let items: Vec<BankItem> = rows
            .into_iter()
            .map(|r| BankItem {
                id: r.id,
                external_id: r.external_id,
                content_area: r.content_area,
                content: r.content,
                answer_key: r.answer_key,
            })
            .collect();
        let index = items.iter().enumerate().map(|(i, it)| (it.id, i)).collect();
        Self {
            id: bank.id,
            name: bank.name.clone(),
            scaling_constant: bank.scaling_constant,
            items,
            params,
            index,
        }
    }

    /// The index of an item id in this bank.
    pub fn index_of(&self, item_id: i64) -> Option<usize> {
        self.index.get(&item_id).copied()
    }
}

/// The banks this instance has loaded.
#[derive(Clone, Default)]
pub struct BankCache {
    banks: Arc<RwLock<HashMap<i64, Arc<Bank>>>>,
}

impl BankCache {
    /// The bank, from memory or else from Postgres; `None` when it does not exist.
    pub async fn get(
        &self,
        conn: &mut AsyncPgConnection,
        bank_id: i64,
    ) -> QueryResult<Option<Arc<Bank>>> {
        if let Some(bank) = self.cached(bank_id) {
            return Ok(Some(bank));
        }
        let Some(row) = queries::find_item_bank(conn, bank_id).await? else {
            return Ok(None);
        };
        let items = queries::load_bank_items(conn, bank_id).await?;
        let bank = Arc::new(Bank::from_rows(&row, items));
        let mut banks = self
            .banks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Some(Arc::clone(banks.entry(bank_id).or_insert(bank))))
    }

    fn cached(&self, bank_id: i64) -> Option<Arc<Bank>> {
        self.banks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&bank_id)
            .cloned()
    }
}
