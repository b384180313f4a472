//! The item bank and the examinees of a simulation: a bank file read and checked exactly as
//! `import-bank` does (same parser, same validation, same in-memory [`Bank`] the server
//! builds from its rows), the built-in synthetic bank, and the true abilities.
//!
//! Owns turning inputs into a bank and a list of true thetas; must not touch a database or
//! run exams.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use chrono::DateTime;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{LogNormal, Normal, StandardNormal};

use crate::bank_file;
use crate::engine::EngineBank;
use crate::exam::{self, ItemModel, NewBank, NewBankItem};
use crate::irt::ItemParams;
use crate::storage::bank_cache::Bank;
use crate::storage::queries::{ItemBankRow, ItemRow};

/// Number of items of the built-in synthetic bank.
pub const SYNTHETIC_ITEMS: usize = 500;
/// Seed of the built-in synthetic bank (fixed: the bank is the same on every machine).
pub const SYNTHETIC_SEED: u64 = 20_240_601;
/// Content areas of the synthetic bank, assigned in turn (for content-balancing studies).
pub const SYNTHETIC_AREAS: [&str; 4] = ["algebra", "geometry", "number", "statistics"];

/// A bank ready for simulation: the same [`Bank`] the server builds from its rows (items
/// numbered 1..=n in file order), and where it came from.
#[derive(Debug)]
pub struct SimBank {
    /// A name for reports: the file name, or `synthetic`.
    pub name: String,
    /// The bank, as the server holds it in memory.
    pub bank: Bank,
    /// The validated rows the bank was built from (what `import-bank` would store), for
    /// writing the bank back out as a file.
    rows: Vec<ItemRow>,
    by_external_id: HashMap<String, i64>,
}

impl SimBank {
    /// Checks `items` with [`exam::validate_bank`] (the rules of `createItemBank` and
    /// `import-bank`) and builds the bank, item `k` (0-based, file order) getting id `k + 1`.
    ///
    /// # Errors
    /// The first item or setting the service would refuse.
    pub fn from_items(
        name: &str,
        scaling_constant: f64,
        items: Vec<NewBankItem>,
    ) -> anyhow::Result<Self> {
        let new_bank = NewBank {
            name: name.to_owned(),
            scaling_constant,
            items,
        };
        let rows =
            exam::validate_bank(&new_bank).map_err(|e| anyhow::anyhow!("invalid bank: {e}"))?;
        // The exams of a study use the operational items; pretest items of the file are left
        // out (the study seeds its own, `--pretest-items`).
        let rows: Vec<ItemRow> = rows
            .into_iter()
            .filter(|r| r.status == crate::exam::ItemStatus::Operational)
            .zip(1..)
            .map(|(r, id)| ItemRow {
                id,
                item_bank_id: 0,
                external_id: r.external_id,
                a: r.a,
                b: r.b,
                c: r.c,
                d: r.d,
                content_area: r.content_area,
                content: r.content,
                answer_key: r.answer_key,
                model: r.model,
                thresholds: r.thresholds,
                scoring: r.scoring,
                enemy_group: r.enemy_group,
                status: r.status,
                retired_at: None,
                added_revision: 0,
            })
            .collect();
        let header = ItemBankRow {
            id: 0,
            name: name.to_owned(),
            scaling_constant,
            created_at: DateTime::UNIX_EPOCH,
            revision: 0,
        };
        let bank = Bank::from_rows(&header, rows.clone());
        let by_external_id = bank
            .items
            .iter()
            .map(|item| (item.external_id.clone(), item.id))
            .collect();
        Ok(Self {
            name: name.to_owned(),
            bank,
            rows,
            by_external_id,
        })
    }

    /// Reads a bank file (JSON list of `ItemInput`, `{"name", "scalingConstant", "items"}`
    /// object, or CSV) with [`bank_file::parse_file`]. The bank is named by the file's `name`,
    /// else the file name without extension.
    ///
    /// # Errors
    /// When the file cannot be read or parsed, when it states a `scalingConstant` other than
    /// `scaling_constant`, or when the service would refuse the bank.
    pub fn from_file(path: &Path, scaling_constant: f64) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file = bank_file::parse_file(&bytes)
            .with_context(|| format!("cannot parse {}", path.display()))?;
        if let Some(stated) = file.scaling_constant {
            anyhow::ensure!(
                stated == scaling_constant,
                "bank {} has scalingConstant {stated} but {scaling_constant} was asked for \
                 (--scaling-constant)",
                path.display()
            );
        }
        let name = file.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "bank".into(), |s| s.to_string_lossy().into_owned())
        });
        Self::from_items(&name, scaling_constant, file.items)
            .with_context(|| format!("bank {}", path.display()))
    }

    /// The bank as a bank file in `import-bank`'s JSON object form (the shape of
    /// `CreateItemBankInput`): `{"name", "scalingConstant", "items": [ItemInput...]}`, items
    /// in bank order with every stored field, so that reading it back with
    /// [`SimBank::from_file`] (or `import-bank`) gives the same bank.
    pub fn to_bank_json(&self) -> serde_json::Value {
        let items: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut item = serde_json::json!({
                    "externalId": r.external_id,
                    "model": r.model,
                    "a": r.a,
                    "b": r.b,
                    "c": r.c,
                    "d": r.d,
                    "contentArea": r.content_area,
                    "content": r.content,
                    "answerKey": r.answer_key,
                });
                let fields = item.as_object_mut().expect("an object");
                if let Some(t) = &r.thresholds {
                    fields.insert("thresholds".into(), serde_json::json!(t));
                }
                if let Some(s) = &r.scoring {
                    fields.insert("scoring".into(), s.clone());
                }
                if let Some(g) = &r.enemy_group {
                    fields.insert("enemyGroup".into(), serde_json::json!(g));
                }
                item
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "scalingConstant": self.bank.scaling_constant,
            "items": items,
        })
    }

    /// A bank of dichotomous items with these parameters, external ids `item-1`, `item-2`…
    ///
    /// # Errors
    /// When a parameter is outside the service's limits.
    pub fn from_params(
        name: &str,
        scaling_constant: f64,
        params: &[ItemParams],
    ) -> anyhow::Result<Self> {
        let items = params
            .iter()
            .enumerate()
            .map(|(k, p)| dichotomous(format!("item-{}", k + 1), p, None))
            .collect();
        Self::from_items(name, scaling_constant, items)
    }

    /// The built-in bank: [`SYNTHETIC_ITEMS`] 3PL items drawn with [`SYNTHETIC_SEED`]
    /// (`a` ~ lognormal(0, 0.25), `b` ~ N(0, 1), `c` ~ U(0.10, 0.25), D = 1), external ids
    /// `syn-001`…`syn-500`, content areas [`SYNTHETIC_AREAS`] in turn.
    pub fn synthetic() -> Self {
        let mut rng = StdRng::seed_from_u64(SYNTHETIC_SEED);
        let discrimination = LogNormal::new(0.0, 0.25).expect("a valid log-normal");
        let items = (0..SYNTHETIC_ITEMS)
            .map(|k| {
                let a = rng.sample(discrimination);
                let b: f64 = rng.sample(StandardNormal);
                let c = rng.random_range(0.10..0.25);
                let area = SYNTHETIC_AREAS[k % SYNTHETIC_AREAS.len()];
                dichotomous(
                    format!("syn-{:03}", k + 1),
                    &ItemParams::three_pl(a, b, c),
                    Some(area),
                )
            })
            .collect();
        Self::from_items("synthetic", 1.0, items).expect("the synthetic bank is valid")
    }

    /// The engine's view of the bank.
    pub fn engine(&self) -> &EngineBank {
        &self.bank.engine
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.bank.items.len()
    }

    /// Whether the bank has no item (never true for a validated bank).
    pub fn is_empty(&self) -> bool {
        self.bank.items.is_empty()
    }

    /// The item id of an external id.
    pub fn id_of(&self, external_id: &str) -> Option<i64> {
        self.by_external_id.get(external_id).copied()
    }

    /// The external id of the item at bank index `index`.
    pub fn external_id(&self, index: usize) -> &str {
        &self.bank.items[index].external_id
    }

    /// The response model of the item at `index`, as the bank file spells it.
    pub fn model_name(&self, index: usize) -> &'static str {
        match &self.bank.engine.items[index] {
            crate::irt::Item::Dichotomous(_) => ItemModel::Dichotomous.as_str(),
            crate::irt::Item::Polytomous(p) => match p.model {
                crate::irt::PolytomousModel::Grm => ItemModel::Grm.as_str(),
                crate::irt::PolytomousModel::Gpcm => ItemModel::Gpcm.as_str(),
            },
        }
    }
}

/// A dichotomous bank item (content `null`, answer key `A`).
fn dichotomous(external_id: String, p: &ItemParams, area: Option<&str>) -> NewBankItem {
    NewBankItem {
        external_id,
        a: p.a,
        b: p.b,
        c: p.c,
        d: p.d,
        content_area: area.map(str::to_owned),
        content: serde_json::Value::Null,
        answer_key: "A".into(),
        model: ItemModel::Dichotomous,
        thresholds: None,
        scoring: None,
        enemy_group: None,
        status: crate::exam::ItemStatus::Operational,
    }
}

/// The distribution of the true abilities (`--theta-dist`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThetaDist {
    /// `normal:MEAN,SD`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation, > 0.
        sd: f64,
    },
    /// `uniform:LOW,HIGH`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound, > low.
        high: f64,
    },
}

impl Default for ThetaDist {
    fn default() -> Self {
        Self::Normal { mean: 0.0, sd: 1.0 }
    }
}

impl std::fmt::Display for ThetaDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Normal { mean, sd } => write!(f, "normal:{mean},{sd}"),
            Self::Uniform { low, high } => write!(f, "uniform:{low},{high}"),
        }
    }
}

impl std::str::FromStr for ThetaDist {
    type Err = String;

    /// `normal:MEAN,SD` (SD > 0) or `uniform:LOW,HIGH` (LOW < HIGH), finite numbers.
    fn from_str(raw: &str) -> Result<Self, String> {
        let usage = || format!("{raw:?}: expected normal:MEAN,SD or uniform:LOW,HIGH");
        let (kind, args) = raw.split_once(':').ok_or_else(usage)?;
        let (x, y) = args.split_once(',').ok_or_else(usage)?;
        let number = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
        let (x, y) = (number(x).ok_or_else(usage)?, number(y).ok_or_else(usage)?);
        match kind.trim().to_ascii_lowercase().as_str() {
            "normal" if y > 0.0 => Ok(Self::Normal { mean: x, sd: y }),
            "normal" => Err(format!("{raw:?}: the standard deviation must be > 0")),
            "uniform" if x < y => Ok(Self::Uniform { low: x, high: y }),
            "uniform" => Err(format!("{raw:?}: LOW must be < HIGH")),
            _ => Err(usage()),
        }
    }
}

impl ThetaDist {
    /// `n` draws from a generator seeded with `seed`, in order.
    pub fn draw(&self, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        match *self {
            // `Normal::new` refuses only a non-finite SD, which `FromStr` never yields (no
            // draw would be finite with one either).
            Self::Normal { mean, sd } => match Normal::new(mean, sd) {
                Ok(normal) => rng.sample_iter(normal).take(n).collect(),
                Err(_) => vec![f64::NAN; n],
            },
            Self::Uniform { low, high } => (0..n)
                .map(|_| low + (high - low) * rng.random::<f64>())
                .collect(),
        }
    }
}

/// Parses a thetas file: one finite number per line; blank lines and lines starting with
/// `#` are skipped.
///
/// # Errors
/// A line that is not a finite number (with its line number), or no theta at all.
pub fn parse_thetas(text: &str) -> anyhow::Result<Vec<f64>> {
    let mut thetas = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let theta = line
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| anyhow::anyhow!("line {}: {line:?} is not a finite number", n + 1))?;
        thetas.push(theta);
    }
    anyhow::ensure!(!thetas.is_empty(), "no theta in the file");
    Ok(thetas)
}
