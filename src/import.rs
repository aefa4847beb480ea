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
    let (pool, _) = server::open_and_migrate(config).await?;
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
