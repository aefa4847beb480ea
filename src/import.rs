//! `poolkeeper import mothers FILE`: streams a CSV file (header row) or JSON lines through
//! `service::mothers::rows`, which checks each row like the batch API and imports the valid ones;
//! this command adds the progress bar and the summary.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::server;
use crate::service::PoolCtx;
use crate::service::audit;
use crate::service::mothers::rows::{self, Format};

/// Imports the file; exit code 0 when every row was imported, 1 when some were refused.
pub async fn import_mothers(
    config: &Config,
    clock: &SharedClock,
    path: &Path,
) -> anyhow::Result<i32> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 512];
    let n = file.read(&mut head)?;
    file.rewind()?;
    let extension = path.extension().and_then(|e| e.to_str());
    let format = Format::detect(extension, &head[..n]);
    let keyring = Keyring::from_config(config)?;
    let (pool, users) = server::open_and_migrate(config).await?;
    let ctx = PoolCtx {
        pool: &pool,
        keyring: &keyring,
        clock,
        child_email_domain: config.child_email_domain.as_deref(),
    };
    let read = rows::read_rows(BufReader::new(file), format)
        .with_context(|| format!("{}", path.display()))?;
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = rows::import_rows(ctx, read, |s| {
        bar.set_position(s.read.min(size));
        bar.set_message(format!(
            "imported {}, refused {}",
            s.imported,
            s.refused.len()
        ));
    })
    .await?;
    bar.finish_and_clear();
    pool.database().close().await;
    let change = audit::changes::mother_import(
        summary.rows as usize,
        summary.imported as usize,
        summary.refused.len(),
    );
    audit::record(&users, clock, &audit::Actor::cli(), change).await;
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

/// Rows written per transaction by `accounts import`; the progress moves on after each.
const ACCOUNT_CHUNK: usize = 500;

/// Counts the bytes read through it, for the progress bar.
struct Counting<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// `poolkeeper accounts import FILE`: streams the file through
/// `service::credential_accounts::import_new_rows` in chunks, creating the valid rows. Exit code 0
/// when no row was refused (duplicates are reported but are no failure: a file can be imported
/// again), 1 when some were.
pub async fn import_accounts(
    config: &Config,
    clock: &SharedClock,
    path: &Path,
    pool: Option<&str>,
) -> anyhow::Result<i32> {
    use crate::service::credential_accounts::{self as accounts, ImportFormat, ImportRow};
    use std::io::IsTerminal;

    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 512];
    let n = file.read(&mut head)?;
    file.rewind()?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => ImportFormat::Csv,
        Some(e)
            if ["jsonl", "ndjson", "json"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x)) =>
        {
            ImportFormat::Jsonl
        }
        _ => ImportFormat::choose(None, &head[..n]).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let keyring = Keyring::from_config(config)?;
    let (pool_db, users) = server::open_and_migrate(config).await?;
    let ctx = crate::service::leasing::LeasingCtx {
        pool: &pool_db,
        keyring: &keyring,
        clock,
        policy: config.leases.policy(),
        desk: &Default::default(),
        webhooks: None,
    };
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut rows = accounts::read_rows(
        Counting {
            inner: file,
            read: read.clone(),
        },
        format,
    );
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Without a terminal the bar is hidden: say how far it got after each chunk instead.
    let lines = !std::io::stderr().is_terminal();
    let (mut total, mut created, mut duplicates) = (0usize, 0usize, 0usize);
    let mut not_created: Vec<ImportRow> = Vec::new();
    loop {
        let chunk: Vec<_> = rows.by_ref().take(ACCOUNT_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let first_row = total + 1;
        total += chunk.len();
        let done = accounts::import_new_rows(ctx, pool, chunk, first_row)
            .await
            .map_err(|e| anyhow::anyhow!("rows {first_row}-{total}: {e}"))?;
        for row in done {
            if row.ok {
                created += 1;
            } else {
                duplicates += usize::from(row.duplicate);
                not_created.push(row);
            }
        }
        let refused = not_created.len() - duplicates;
        let progress =
            format!("rows {total}: created {created}, duplicates {duplicates}, refused {refused}");
        bar.set_position(read.load(std::sync::atomic::Ordering::Relaxed).min(size));
        if lines {
            eprintln!("{progress}");
        }
        bar.set_message(progress);
    }
    bar.finish_and_clear();
    pool_db.database().close().await;
    let refused = not_created.len() - duplicates;
    let change = audit::more_changes::account_import_counts(total, created, refused);
    audit::record(&users, clock, &audit::Actor::cli(), change).await;
    println!(
        "{}: {total} rows, created {created}, duplicates {duplicates}, refused {refused}",
        path.display()
    );
    for r in &not_created {
        println!(
            "  row {} ({}): {}: {}",
            r.row,
            r.login.as_deref().unwrap_or("-"),
            if r.duplicate { "duplicate" } else { "refused" },
            r.errors.join("; ")
        );
    }
    Ok(if refused == 0 { 0 } else { 1 })
}
