//! Reading item banks from files for `import-bank` (and `simulate`): JSON, either a bare
//! list of `ItemInput` objects or a `CreateItemBankInput`-shaped object `{"name",
//! "scalingConstant", "items": [...]}` (name and scalingConstant optional), or CSV with the
//! same columns as `ItemInput` (`externalId,a,b,c,d,contentArea,content,answerKey,model,
//! thresholds,scoring,enemyGroup`; all but externalId, b, content and answerKey may be empty
//! or absent; other columns are ignored; `thresholds` is a JSON array or `;`-separated
//! numbers, `scoring` a JSON object). Pure parsing: no I/O beyond the bytes it is given, so
//! it can be fuzzed. Must not validate the bank (that is `exam::validate_bank`).

use serde::Deserialize;

use crate::exam::{ItemModel, ItemStatus, NewBankItem};

/// Why a bank file could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BankFileError {
    /// The file starts like JSON (`[` or `{`) but is not a bank in JSON.
    #[error("invalid JSON bank: {0}")]
    Json(String),
    /// A CSV row or header is unusable.
    #[error("invalid CSV bank, {0}")]
    Csv(String),
    /// The bytes are not UTF-8 text.
    #[error("invalid bank file: not UTF-8 ({0})")]
    Encoding(String),
}

/// A parsed bank file: its items and, for the JSON object form, the bank settings it names.
#[derive(Clone, Debug)]
pub struct BankFile {
    /// `name` of the JSON object form; `None` for a list or CSV.
    pub name: Option<String>,
    /// `scalingConstant` of the JSON object form; `None` when absent (list, CSV).
    pub scaling_constant: Option<f64>,
    /// The items, in file order.
    pub items: Vec<NewBankItem>,
}

/// The JSON object form: the shape of `CreateItemBankInput`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonBank {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scaling_constant: Option<f64>,
    items: Vec<NewBankItem>,
}

/// Parses a bank file and returns its items (see [`parse_file`]).
///
/// # Errors
/// As [`parse_file`].
pub fn parse(bytes: &[u8]) -> Result<Vec<NewBankItem>, BankFileError> {
    parse_file(bytes).map(|file| file.items)
}

/// Parses a bank file: JSON when it starts with `[` (a list of items) or `{` (an object
/// `{"name"?, "scalingConstant"?, "items": [...]}`) after white space, CSV otherwise.
///
/// # Errors
/// The JSON error (with line and column) for a file that starts like JSON, the CSV error
/// (with its line) otherwise.
pub fn parse_file(bytes: &[u8]) -> Result<BankFile, BankFileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| BankFileError::Encoding(e.to_string()))?;
    let text = text.trim_start_matches('\u{feff}');
    let json_error = |e: serde_json::Error| BankFileError::Json(e.to_string());
    match text.trim_start().chars().next() {
        Some('[') => Ok(BankFile {
            name: None,
            scaling_constant: None,
            items: serde_json::from_str(text).map_err(json_error)?,
        }),
        Some('{') => {
            let bank: JsonBank = serde_json::from_str(text).map_err(json_error)?;
            Ok(BankFile {
                name: bank.name,
                scaling_constant: bank.scaling_constant,
                items: bank.items,
            })
        }
        _ => Ok(BankFile {
            name: None,
            scaling_constant: None,
            items: parse_csv(text)?,
        }),
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
    let (model, thresholds, scoring, enemy_group, status) = (
        column("model"),
        column("thresholds"),
        column("scoring"),
        column("enemyGroup"),
        column("status"),
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
            status: match cell(status).map(str::to_ascii_uppercase).as_deref() {
                None | Some("OPERATIONAL") => ItemStatus::Operational,
                Some("PRETEST") => ItemStatus::Pretest,
                Some(other) => {
                    return Err(BankFileError::Csv(format!(
                        "line {line}: status {other:?} is not OPERATIONAL or PRETEST"
                    )));
                }
            },
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

    #[test]
    fn a_json_object_with_items_is_a_bank() {
        let list = br#"[{"externalId":"q1","a":1.2,"b":-0.5,"content":"x","answerKey":"A"}]"#;
        let object =
            br#"  {"items": [{"externalId":"q1","a":1.2,"b":-0.5,"content":"x","answerKey":"A"}]}"#;
        let from_list = parse_file(list).unwrap();
        let from_object = parse_file(object).unwrap();
        assert_eq!(from_object.items.len(), 1);
        assert_eq!(
            from_object.items[0].external_id,
            from_list.items[0].external_id
        );
        assert_eq!(from_object.items[0].a, 1.2);
        assert_eq!(
            (from_object.name, from_object.scaling_constant),
            (None, None)
        );
        assert_eq!(parse(object).unwrap().len(), 1);
        // The shape of CreateItemBankInput, with its settings.
        let full = br#"{"name": "algebra 1", "scalingConstant": 1.702,
            "items": [{"externalId":"q1","b":0,"content":null,"answerKey":"A"}]}"#;
        let file = parse_file(full).unwrap();
        assert_eq!(file.name.as_deref(), Some("algebra 1"));
        assert_eq!(file.scaling_constant, Some(1.702));
        assert_eq!(file.items[0].content, serde_json::Value::Null);
        // CSV and lists name no settings.
        let csv = parse_file(b"externalId,b,content,answerKey\nq1,0,x,A\n").unwrap();
        assert_eq!((csv.name, csv.scaling_constant), (None, None));
    }

    #[test]
    fn broken_json_is_reported_as_json_not_csv() {
        for bad in [
            &br#"{"items": [{"externalId":"q1","b":0,"content":"x"}]}"#[..],
            br#"{"itemz": []}"#,
            br#"{"items": [}"#,
            br#"  [{"externalId":"q1","b":"hard","content":"x","answerKey":"A"}]"#,
            b"{",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, BankFileError::Json(_)),
                "{}: {err}",
                String::from_utf8_lossy(bad)
            );
            assert!(err.to_string().starts_with("invalid JSON bank: "), "{err}");
        }
        let err = parse(br#"{"items": [{"externalId":"q1","b":0,"content":"x"}]}"#).unwrap_err();
        assert!(err.to_string().contains("answerKey"), "{err}");
        let err = parse(br#"{"itemz": []}"#).unwrap_err();
        assert!(err.to_string().contains("itemz"), "{err}");
        assert!(matches!(
            parse(b"\xff\xfe"),
            Err(BankFileError::Encoding(_))
        ));
    }

    #[test]
    fn unknown_csv_columns_are_ignored() {
        let csv = "external_id,externalId,a,b,content,answerKey,exposure_rate\n\
                   x,q1,1.5,0.25,c,A,0.3\n";
        let items = parse(csv.as_bytes()).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            (items[0].external_id.as_str(), items[0].a, items[0].b),
            ("q1", 1.5, 0.25)
        );
    }
}
