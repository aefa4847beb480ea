//! `poolkeeper import mothers FILE`: streams a CSV file (header row) or JSON lines, checks each row
//! like the batch API and imports the valid ones, with a progress bar and a summary.
//!
//! Rows are numbered from 1 in data order (the CSV header and blank lines are not counted). CSV
//! columns are the create body's fields; `provider_config` holds JSON, `teams` holds team names
//! separated by `;`. Empty cells are absent fields.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::server;
use crate::service::PoolCtx;
use crate::service::mothers::{self, BatchRowResult, RawRow};

/// Rows checked and imported together.
const CHUNK: usize = 200;
const COLUMNS: &[&str] = &[
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
enum Format {
    Csv,
    JsonLines,
}

fn detect(path: &Path, file: &mut File) -> anyhow::Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => return Ok(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => return Ok(Format::JsonLines),
        _ => {}
    }
    let mut head = [0u8; 512];
    let n = file.read(&mut head)?;
    file.rewind()?;
    let first = String::from_utf8_lossy(&head[..n]);
    Ok(if first.trim_start().starts_with('{') {
        Format::JsonLines
    } else {
        Format::Csv
    })
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

/// Rows from pasted text (the web UI's batch form): JSON lines when the first non-blank character is
/// `{`, else CSV with a header row.
pub fn rows_from_text(text: &str) -> anyhow::Result<Vec<RawRow>> {
    if text.trim_start().starts_with('{') {
        return Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("not JSON: {e}")))
            .collect());
    }
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| anyhow::anyhow!("reading the header row: {e}"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if let Some(bad) = headers.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        anyhow::bail!("unknown column {bad:?}; columns are {}", COLUMNS.join(", "));
    }
    Ok(reader
        .records()
        .map(|r| match r {
            Ok(r) => csv_row(&headers, &r),
            Err(e) => Err(format!("not a valid CSV row: {e}")),
        })
        .collect())
}

/// Imports the file; exit code 0 when every row was imported, 1 when some were refused.
pub async fn import_mothers(
    config: &Config,
    clock: &SharedClock,
    path: &Path,
) -> anyhow::Result<i32> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let format = detect(path, &mut file)?;
    let keyring = Keyring::from_config(config)?;
    let (pool, _) = server::open_and_migrate(config).await?;
    let ctx = PoolCtx {
        pool: &pool,
        keyring: &keyring,
        clock,
        child_email_domain: config.child_email_domain.as_deref(),
    };
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    let mut seen = HashSet::new();
    let mut chunk: Vec<RawRow> = Vec::with_capacity(CHUNK);
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(BufReader::new(file));
            let headers: Vec<String> = reader
                .headers()
                .with_context(|| format!("reading the header row of {}", path.display()))?
                .iter()
                .map(|h| h.trim().to_string())
                .collect();
            if let Some(bad) = headers.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
                anyhow::bail!(
                    "{}: unknown column {bad:?}; columns are {}",
                    path.display(),
                    COLUMNS.join(", ")
                );
            }
            for record in reader.records() {
                let row = match &record {
                    Ok(r) => csv_row(&headers, r),
                    Err(e) => Err(format!("not a valid CSV row: {e}")),
                };
                chunk.push(row);
                if let Ok(r) = &record
                    && let Some(pos) = r.position()
                {
                    bar.set_position(pos.byte());
                }
                if chunk.len() == CHUNK {
                    summary
                        .run(ctx, std::mem::take(&mut chunk), &mut seen, &bar)
                        .await?;
                }
            }
        }
        Format::JsonLines => {
            let mut done = 0u64;
            for line in BufReader::new(file).lines() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                done += line.len() as u64 + 1;
                bar.set_position(done.min(size));
                if line.trim().is_empty() {
                    continue;
                }
                chunk.push(serde_json::from_str(&line).map_err(|e| format!("not JSON: {e}")));
                if chunk.len() == CHUNK {
                    summary
                        .run(ctx, std::mem::take(&mut chunk), &mut seen, &bar)
                        .await?;
                }
            }
        }
    }
    if !chunk.is_empty() {
        summary.run(ctx, chunk, &mut seen, &bar).await?;
    }
    bar.finish_and_clear();
    pool.database().close().await;
    println!(
        "{}: {} rows, imported {}, refused {}",
        path.display(),
        summary.rows,
        summary.imported,
        summary.refused.len()
    );
    for r in &summary.refused {
        println!(
            "  row {} ({}): {}",
            r.row,
            r.name.as_deref().unwrap_or("-"),
            r.errors.join("; ")
        );
    }
    Ok(if summary.refused.is_empty() { 0 } else { 1 })
}

#[derive(Default)]
struct Summary {
    rows: usize,
    imported: usize,
    refused: Vec<BatchRowResult>,
}

impl Summary {
    async fn run(
        &mut self,
        ctx: PoolCtx<'_>,
        rows: Vec<RawRow>,
        seen: &mut HashSet<String>,
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let first = self.rows + 1;
        self.rows += rows.len();
        let report = mothers::batch(ctx, rows, true, first, seen)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        self.imported += report.imported;
        self.refused
            .extend(report.rows.into_iter().filter(|r| !r.ok));
        bar.set_message(format!(
            "imported {}, refused {}",
            self.imported,
            self.refused.len()
        ));
        Ok(())
    }
}
