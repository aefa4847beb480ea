//! Mother rows from text: CSV with a header row, or JSON lines (one create body per line), read as
//! a stream, and imported in chunks like the batch API. The CLI's `import mothers` and the web
//! UI's batch form both read through here; the CLI adds only its progress bar and printing.
//!
//! Rows are numbered from 1 in data order (the CSV header and blank lines are not counted). CSV
//! columns are the create body's fields; `provider_config` holds JSON, `teams` holds team names
//! separated by `;`. Empty cells are absent fields.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value};

use super::{BatchRowResult, RawRow, batch};
use crate::service::{Error, PoolCtx, Result};

/// Rows checked and imported together.
const CHUNK: usize = 200;
/// The columns a CSV file may have.
pub const COLUMNS: &[&str] = &[
    "name",
    "provider",
    "credential",
    "provider_config",
    "seat_limit",
    "pool_group_id",
    "notes",
    "teams",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// From a file extension (`csv`, `jsonl`, `ndjson`, `json`), else from the first bytes: JSON
    /// lines when the first non-blank character is `{`, else CSV.
    pub fn detect(extension: Option<&str>, head: &[u8]) -> Format {
        match extension.map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Format::Csv,
            Some("jsonl" | "ndjson" | "json") => Format::JsonLines,
            _ if String::from_utf8_lossy(head).trim_start().starts_with('{') => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// A row as read, and how many bytes of the input were read up to its end (for progress).
pub type ReadRow = (RawRow, u64);

/// The rows of `input`, lazily. A bad header row is an error at once; a bad row is an `Err` row.
pub fn read_rows<'a, R: Read + 'a>(
    input: R,
    format: Format,
) -> Result<Box<dyn Iterator<Item = ReadRow> + 'a>> {
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(input);
            let headers: Vec<String> = reader
                .headers()
                .map_err(|e| {
                    Error::invalid("invalid_rows", format!("reading the header row: {e}"))
                })?
                .iter()
                .map(|h| h.trim().to_string())
                .collect();
            if let Some(bad) = headers.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
                return Err(Error::invalid(
                    "invalid_rows",
                    format!("unknown column {bad:?}; columns are {}", COLUMNS.join(", ")),
                ));
            }
            Ok(Box::new(reader.into_records().map(
                move |record| match record {
                    Ok(r) => {
                        let read = r.position().map_or(0, |p| p.byte());
                        (csv_row(&headers, &r), read)
                    }
                    Err(e) => {
                        let read = e.position().map_or(0, |p| p.byte());
                        (Err(format!("not a valid CSV row: {e}")), read)
                    }
                },
            )))
        }
        Format::JsonLines => {
            let mut read = 0u64;
            Ok(Box::new(BufReader::new(input).lines().filter_map(
                move |line| {
                    let line = match line {
                        Ok(line) => line,
                        Err(e) => return Some((Err(format!("not readable: {e}")), read)),
                    };
                    read += line.len() as u64 + 1;
                    if line.trim().is_empty() {
                        return None;
                    }
                    let row = serde_json::from_str(&line).map_err(|e| format!("not JSON: {e}"));
                    Some((row, read))
                },
            )))
        }
    }
}

/// Rows from pasted text (the web UI's batch form), the format told by its first character.
pub fn rows_from_text(text: &str) -> Result<Vec<RawRow>> {
    let format = Format::detect(None, text.as_bytes());
    Ok(read_rows(text.as_bytes(), format)?
        .map(|(row, _)| row)
        .collect())
}

/// One CSV record as a create body.
fn csv_row(headers: &[String], record: &csv::StringRecord) -> RawRow {
    let mut obj = Map::new();
    for (h, cell) in headers.iter().zip(record.iter()) {
        if cell.is_empty() {
            continue;
        }
        let value = match h.as_str() {
            "seat_limit" | "pool_group_id" => Value::from(
                cell.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{h}: {cell:?} is not a whole number"))?,
            ),
            "provider_config" => serde_json::from_str(cell)
                .map_err(|e| format!("provider_config: not JSON ({e})"))?,
            "teams" => Value::Array(
                cell.split(';')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| serde_json::json!({"name": t}))
                    .collect(),
            ),
            _ => Value::String(cell.to_string()),
        };
        obj.insert(h.clone(), value);
    }
    Ok(Value::Object(obj))
}

/// What an import did so far.
#[derive(Clone, Debug, Default)]
pub struct ImportSummary {
    pub rows: usize,
    pub imported: usize,
    /// Refused rows with why, in row order.
    pub refused: Vec<BatchRowResult>,
    /// Bytes of the input read so far.
    pub read: u64,
}

/// Checks and imports `rows` in chunks (each valid row in its own transaction, names unique across
/// the whole input); `progress` sees the summary after each chunk.
pub async fn import_rows(
    ctx: PoolCtx<'_>,
    rows: impl Iterator<Item = ReadRow>,
    mut progress: impl FnMut(&ImportSummary),
) -> Result<ImportSummary> {
    let mut summary = ImportSummary::default();
    let mut seen = HashSet::new();
    let mut chunk: Vec<RawRow> = Vec::with_capacity(CHUNK);
    let mut rows = rows.peekable();
    while let Some((row, read)) = rows.next() {
        chunk.push(row);
        summary.read = read;
        if chunk.len() == CHUNK || rows.peek().is_none() {
            let first = summary.rows + 1;
            summary.rows += chunk.len();
            let report = batch(ctx, std::mem::take(&mut chunk), true, first, &mut seen).await?;
            summary.imported += report.imported;
            summary
                .refused
                .extend(report.rows.into_iter().filter(|r| !r.ok));
            progress(&summary);
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension_else_first_character() {
        let cases = [
            (Some("CSV"), "{", Format::Csv),
            (Some("jsonl"), "name", Format::JsonLines),
            (Some("ndjson"), "", Format::JsonLines),
            (Some("txt"), "  {\"name\": 1}", Format::JsonLines),
            (None, "name,provider", Format::Csv),
            (None, "", Format::Csv),
        ];
        for (ext, head, want) in cases {
            assert_eq!(
                Format::detect(ext, head.as_bytes()),
                want,
                "{ext:?} {head:?}"
            );
        }
    }

    #[test]
    fn csv_rows_become_create_bodies_and_bad_cells_are_row_errors() {
        let text = "name,seat_limit,teams,provider_config\n\
                    a,3,x; y,\n\
                    b,three,,\n\
                    c,,,{bad\n";
        let rows = rows_from_text(text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].as_ref().unwrap(),
            &serde_json::json!({"name": "a", "seat_limit": 3, "teams": [{"name": "x"}, {"name": "y"}]})
        );
        assert!(rows[1].as_ref().unwrap_err().contains("seat_limit"));
        assert!(rows[2].as_ref().unwrap_err().contains("provider_config"));
    }

    #[test]
    fn unknown_csv_column_is_refused_whole() {
        let err = rows_from_text("name,colour\na,red\n").unwrap_err();
        assert!(err.message.contains("colour"), "{}", err.message);
    }

    #[test]
    fn json_lines_skip_blank_lines_and_count_bytes() {
        let text = "{\"name\": \"a\"}\n\n{oops\n";
        let rows: Vec<ReadRow> = read_rows(text.as_bytes(), Format::JsonLines)
            .unwrap()
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, 14);
        assert!(rows[1].0.as_ref().unwrap_err().starts_with("not JSON"));
        assert_eq!(rows[1].1, text.len() as u64);
    }
}
