//! Reading item banks from files for `import-bank` (and `simulate`): a JSON list of
//! `ItemInput` objects, or CSV with the same columns (`externalId,a,b,c,d,contentArea,
//! content,answerKey,model,thresholds,scoring,enemyGroup`; all but externalId, b, content
//! and answerKey may be empty or absent; `thresholds` is a JSON array or `;`-separated
//! numbers, `scoring` a JSON object). Pure parsing: no I/O beyond the bytes it is given, so
//! it can be fuzzed.

use crate::exam::{ItemModel, NewBankItem};

/// Why a bank file could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BankFileError {
    /// The JSON is not a list of items.
    #[error("invalid JSON bank: {0}")]
    Json(String),
    /// A CSV row or header is unusable.
    #[error("invalid CSV bank, {0}")]
    Csv(String),
}

/// Parses a bank file: JSON when it starts with `[` (after white space), CSV otherwise.
pub fn parse(bytes: &[u8]) -> Result<Vec<NewBankItem>, BankFileError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| BankFileError::Csv(format!("not UTF-8: {e}")))?;
    let text = text.trim_start_matches('\u{feff}');
    if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(|e| BankFileError::Json(e.to_string()))
    } else {
        parse_csv(text)
    }
}

fn parse_csv(text: &str) -> Result<Vec<NewBankItem>, BankFileError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| BankFileError::Csv(format!("header: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let required = |name: &str| {
        column(name).ok_or_else(|| BankFileError::Csv(format!("header: missing column {name}")))
    };
    let (external_id, b, content, answer_key) = (
        required("externalId")?,
        required("b")?,
        required("content")?,
        required("answerKey")?,
    );
    let (a, c, d, content_area) = (column("a"), column("c"), column("d"), column("contentArea"));
    let (model, thresholds, scoring, enemy_group) = (
        column("model"),
        column("thresholds"),
        column("scoring"),
        column("enemyGroup"),
    );
    let mut items = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let line = n + 2;
        let record = record.map_err(|e| BankFileError::Csv(format!("line {line}: {e}")))?;
        let cell = |i: Option<usize>| i.and_then(|i| record.get(i)).filter(|v| !v.is_empty());
        let number =
            |i: Option<usize>, name: &str, default: Option<f64>| -> Result<f64, BankFileError> {
                match (cell(i), default) {
                    (Some(v), _) => v.parse().map_err(|_| {
                        BankFileError::Csv(format!("line {line}: {name} {v:?} is not a number"))
                    }),
                    (None, Some(default)) => Ok(default),
                    (None, None) => Err(BankFileError::Csv(format!(
                        "line {line}: {name} is missing"
                    ))),
                }
            };
        let raw_content = cell(Some(content)).unwrap_or_default();
        items.push(NewBankItem {
            external_id: cell(Some(external_id)).unwrap_or_default().to_owned(),
            a: number(a, "a", Some(1.0))?,
            b: number(Some(b), "b", None)?,
            c: number(c, "c", Some(0.0))?,
            d: number(d, "d", Some(1.0))?,
            content_area: cell(content_area).map(str::to_owned),
            // A cell that is not JSON is taken as a plain string.
            content: serde_json::from_str(raw_content)
                .unwrap_or_else(|_| serde_json::Value::String(raw_content.to_owned())),
            answer_key: cell(Some(answer_key)).unwrap_or_default().to_owned(),
            model: match cell(model).map(str::to_ascii_uppercase).as_deref() {
                None | Some("DICHOTOMOUS") => ItemModel::Dichotomous,
                Some("GRM") => ItemModel::Grm,
                Some("GPCM") => ItemModel::Gpcm,
                Some(other) => {
                    return Err(BankFileError::Csv(format!(
                        "line {line}: model {other:?} is not DICHOTOMOUS, GRM or GPCM"
                    )));
                }
            },
            thresholds: cell(thresholds)
                .map(|raw| {
                    parse_thresholds(raw).ok_or_else(|| {
                        BankFileError::Csv(format!(
                            "line {line}: thresholds {raw:?} are not numbers"
                        ))
                    })
                })
                .transpose()?,
            scoring: cell(scoring)
                .map(|raw| {
                    serde_json::from_str(raw).map_err(|_| {
                        BankFileError::Csv(format!("line {line}: scoring is not a JSON object"))
                    })
                })
                .transpose()?,
            enemy_group: cell(enemy_group).map(str::to_owned),
        });
    }
    Ok(items)
}

/// `[0.1, 0.5]` or `0.1;0.5`.
fn parse_thresholds(raw: &str) -> Option<Vec<f64>> {
    if raw.trim_start().starts_with('[') {
        serde_json::from_str(raw).ok()
    } else {
        raw.split(';').map(|t| t.trim().parse().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_give_the_same_items() {
        let json = br#"[{"externalId":"q1","a":1.2,"b":-0.5,"c":0.2,"contentArea":"algebra",
            "content":{"stem":"2+2?"},"answerKey":"4"},{"externalId":"q2","b":1,"content":"x","answerKey":"B"}]"#;
        let csv = "externalId,a,b,c,d,contentArea,content,answerKey\n\
                   q1,1.2,-0.5,0.2,,algebra,\"{\"\"stem\"\":\"\"2+2?\"\"}\",4\n\
                   q2,,1,,,,x,B\n";
        let from_json = parse(json).unwrap();
        let from_csv = parse(csv.as_bytes()).unwrap();
        assert_eq!(from_json.len(), 2);
        for (j, c) in from_json.iter().zip(&from_csv) {
            assert_eq!(j.external_id, c.external_id);
            assert_eq!((j.a, j.b, j.c, j.d), (c.a, c.b, c.c, c.d));
            assert_eq!(j.content_area, c.content_area);
            assert_eq!(j.content, c.content);
            assert_eq!(j.answer_key, c.answer_key);
        }
        assert_eq!(from_csv[1].a, 1.0);
        assert_eq!(from_csv[1].d, 1.0);
    }

    #[test]
    fn polytomous_items_read_from_csv() {
        let csv = "externalId,a,b,content,answerKey,model,thresholds,scoring,enemyGroup\n\
                   p1,1.1,0,essay,all,GRM,-1;0.5;1.2,\"{\"\"none\"\":0,\"\"all\"\":3}\",g1\n\
                   p2,0.9,0,likert,4,gpcm,\"[0.2,-0.4]\",,\n";
        let items = parse(csv.as_bytes()).unwrap();
        assert_eq!(items[0].model, ItemModel::Grm);
        assert_eq!(items[0].thresholds, Some(vec![-1.0, 0.5, 1.2]));
        assert_eq!(
            items[0].scoring,
            Some(serde_json::json!({"none": 0, "all": 3}))
        );
        assert_eq!(items[0].enemy_group.as_deref(), Some("g1"));
        assert_eq!(items[1].model, ItemModel::Gpcm);
        assert_eq!(items[1].thresholds, Some(vec![0.2, -0.4]));
        assert!(parse(b"externalId,b,content,answerKey,model\nx,0,c,A,RASCH\n").is_err());
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let err = parse(b"externalId,b,content,answerKey\nq1,hard,x,A\n").unwrap_err();
        assert_eq!(
            err,
            BankFileError::Csv("line 2: b \"hard\" is not a number".into())
        );
        let err = parse(b"externalId,content,answerKey\nq1,x,A\n").unwrap_err();
        assert!(err.to_string().contains("missing column b"), "{err}");
        assert!(matches!(parse(b"[{\"b\":1}]"), Err(BankFileError::Json(_))));
    }
}
