//! `poolkeeper bench pool`: fills a fresh pool database and times the queries behind the mothers
//! list (first and last page, with usage), a name search and the stats endpoint. Prints one JSON
//! line; nothing here is used by the server.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::crypto::{Credential, Keyring};
use crate::db::{OpenOptions, PoolDb};
use crate::domain::mothers::contains_pattern;
use crate::store::bench_fill;
use crate::store::mothers::{self, MotherFilter};

#[derive(Args, Debug, Clone)]
pub struct PoolBenchArgs {
    /// Mothers to create (7 seats each).
    #[arg(long, default_value_t = 10_000)]
    pub mothers: i64,
    /// Pool database to fill; it must hold no mothers [default: SQLite in a new temp dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Timed runs of each query.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn time<F, Fut>(iterations: usize, mut f: F) -> anyhow::Result<serde_json::Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // One untimed run warms caches and the statement cache.
    f().await?;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f().await?;
        samples.push(start.elapsed());
    }
    samples.sort();
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(json!({
        "p50_ms": round(percentile(&samples, 0.50)),
        "p99_ms": round(percentile(&samples, 0.99)),
    }))
}

pub async fn pool(args: &PoolBenchArgs) -> anyhow::Result<()> {
    if args.mothers < 1 || args.iterations < 1 {
        anyhow::bail!("--mothers and --iterations must be at least 1");
    }
    let temp = tempfile_dir()?;
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", temp.join("pool.db").display()),
    };
    let db = PoolDb::open(&url, &OpenOptions::default()).await?;
    db.database().migrate().await?;
    if bench_fill::count_mothers(&db).await? > 0 {
        anyhow::bail!("the bench database already holds mothers; give it a fresh database");
    }
    let keyring = Keyring::parse(&Keyring::generate_key_text())?;
    let sealed = keyring.seal(&Credential::new("bench-credential"))?;
    let now = crate::clock::system().now_ms();
    let fill_start = Instant::now();
    let mut next = 1;
    while next <= args.mothers {
        let count = bench_fill::BATCH.min(args.mothers - next + 1);
        bench_fill::insert_mothers(&db, next, count, 7, &sealed, now).await?;
        next += count;
    }
    let fill_seconds = fill_start.elapsed().as_secs_f64();
    let result = run_queries(&db, args).await;
    db.database().close().await;
    if args.database_url.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    let (first, deep, search, stats) = result?;
    let line = json!({
        "bench": "pool",
        "backend": db.database().backend().as_str(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "mothers": args.mothers,
        "seats_per_mother": 7,
        "iterations": args.iterations,
        "fill_seconds": (fill_seconds * 100.0).round() / 100.0,
        "list_first_page": first,
        "list_deep_page": deep,
        "search": search,
        "stats": stats,
    });
    println!("{line}");
    Ok(())
}

type Figures = (
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
);

async fn run_queries(db: &PoolDb, args: &PoolBenchArgs) -> anyhow::Result<Figures> {
    let page_size = 50;
    let all = MotherFilter::default();
    let last_offset = ((args.mothers - 1) / page_size) * page_size;
    let first = time(args.iterations, || async {
        mothers::list_with_usage(db, &all, page_size, 0).await?;
        Ok(())
    })
    .await?;
    let deep = time(args.iterations, || async {
        mothers::list_with_usage(db, &all, page_size, last_offset).await?;
        Ok(())
    })
    .await?;
    // A term in the middle of the names: matches about a tenth of a percent of them.
    let search_filter = MotherFilter {
        name_like: Some(contains_pattern("-00012")),
        ..MotherFilter::default()
    };
    let search = time(args.iterations, || async {
        mothers::list_with_usage(db, &search_filter, page_size, 0).await?;
        Ok(())
    })
    .await?;
    let stats = time(args.iterations, || async {
        mothers::counts_by_status(db).await?;
        mothers::count_groups_and_children(db).await?;
        Ok(())
    })
    .await?;
    Ok((first, deep, search, stats))
}

/// A new directory under the system temp dir for the default SQLite bench database.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "poolkeeper-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
