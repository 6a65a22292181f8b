//! The Markdown report: the table's rows, headlines, notes and the environment they were measured in.

use crate::{
    config::{Config, Ctx, R},
    dataset::Dataset,
    plots,
    stats::{fmt_bytes, fmt_time, median, pct, ratio_lower, with_commas},
};
use sqlx::Connection;
use std::fmt::Write as _;

/// One row of the table.
pub struct Line {
    pub case: String,
    pub measure: String,
    pub variant: String,
    pub median: String,
    p99: String,
    pub ratio: String,
    pub runs: usize,
}

#[derive(Default)]
pub struct Results {
    pub lines: Vec<Line>,
    pub headlines: Vec<String>,
    pub notes: Vec<String>,
    pub env: Vec<(String, String)>,
    /// What the cases leave for the plots.
    pub plots: plots::Data,
    /// The plots drawn: (file name beside the report, caption).
    pub figures: Vec<(String, String)>,
}

impl Results {
    #[allow(clippy::too_many_arguments)]
    pub fn line(
        &mut self,
        case: &str,
        measure: &str,
        variant: &str,
        median: String,
        p99: String,
        ratio: String,
        runs: usize,
    ) {
        eprintln!("  {case} | {measure} | {variant} | {median} | {p99} | {ratio}");
        self.lines.push(Line {
            case: case.into(),
            measure: measure.into(),
            variant: variant.into(),
            median,
            p99,
            ratio,
            runs,
        });
    }

    /// A timing row: median, p99 and the ratio of the baseline's median to this one's.
    pub fn timing(
        &mut self,
        case: &str,
        measure: &str,
        variant: &str,
        xs: &[f64],
        base: Option<&[f64]>,
        words: (&str, &str),
    ) {
        let ratio = match base {
            None => "baseline".into(),
            Some(b) => ratio_lower(median(b), median(xs), words.0, words.1),
        };
        self.line(case, measure, variant, fmt_time(median(xs)), fmt_time(pct(xs, 99.0)), ratio, xs.len());
    }

    /// The whole report, in Markdown, under `title`.
    pub fn markdown(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {title}\n");
        let _ = writeln!(
            s,
            "Reproduce with `make bench` (`scripts/bench.sh`: a throwaway PostgreSQL on 127.0.0.1, the dev \
             profile, this table on stdout and in `bench/RESULTS.md`); `BENCH_ROWS=10000000 make bench` for \
             10M objects. The machine is shared and noisy: read the ratios, not the absolute numbers.\n"
        );
        if !self.headlines.is_empty() {
            let _ = writeln!(s, "## Headline\n");
            for h in &self.headlines {
                let _ = writeln!(s, "- {h}");
            }
            let _ = writeln!(s);
        }
        if !self.figures.is_empty() {
            let _ = writeln!(s, "## Plots\n");
            for (file, caption) in &self.figures {
                let _ = writeln!(s, "![{caption}]({file})\n\n{caption}\n");
            }
        }
        let _ = writeln!(s, "## Results\n");
        let _ = writeln!(s, "| case | measure | variant | median | p99 | vs baseline | runs |");
        let _ = writeln!(s, "|---|---|---|---:|---:|---|---:|");
        for l in &self.lines {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                l.case, l.measure, l.variant, l.median, l.p99, l.ratio, l.runs
            );
        }
        let _ = writeln!(s, "\n## How each case is measured\n");
        for (i, n) in self.notes.iter().enumerate() {
            let _ = writeln!(s, "{}. {n}", i + 1);
        }
        let _ = writeln!(s, "\n## Environment\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        for (k, v) in &self.env {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        s
    }
}

/// In `bench/RESULTS.md`, what follows this line was measured by other runs and is kept as it is.
pub const KEEP_MARKER: &str = "<!-- make bench keeps what follows: measured by other runs -->";
/// What the numbers were measured on: machine, server, settings, dataset, runs.
pub async fn environment(cfg: &Config, data: Option<&Dataset>, res: &mut Results) -> R<()> {
    let mut c = cfg.server.connect("postgres").await?;
    let version: String = sqlx::query_scalar("SELECT version()").fetch_one(&mut c).await.ctx("version")?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name IN
           ('shared_buffers', 'work_mem', 'maintenance_work_mem', 'effective_cache_size', 'max_parallel_workers_per_gather',
            'max_parallel_maintenance_workers', 'jit', 'fsync', 'synchronous_commit', 'full_page_writes', 'random_page_cost')
         ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .ctx("settings")?;
    let _ = c.close().await;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .map(|kb| fmt_bytes(kb * 1024.0))
        .unwrap_or_default();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&cfg.root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain"]).is_empty() { "" } else { " with uncommitted changes" };
    res.env.push(("date".into(), chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()));
    res.env.push(("commit".into(), format!("{commit}{dirty}")));
    res.env.push(("CPUs".into(), format!("{cpus} ({model}), shared; {mem} RAM")));
    res.env.push(("PostgreSQL".into(), version));
    res.env.push((
        "settings".into(),
        settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
            + "; autovacuum off on the benchmark's tables (each pass sees exactly the state it describes)",
    ));
    if let Some(data) = data {
        res.env.push((
        "dataset".into(),
        format!(
            "{} objects in the measured job, {} in {} background jobs, interleaved ({} rows, {} with indexes, heap {}), \
             built in {:.0} s",
            with_commas(cfg.rows),
            with_commas(cfg.bg_rows),
            cfg.bg_jobs,
            with_commas(data.total),
            fmt_bytes(data.table_bytes as f64),
            fmt_bytes(data.heap_bytes as f64),
            data.build_s
        ),
    ));
    }
    res.env.push((
        "status mix".into(),
        "by key order, as a running scan: 53.9% succeeded, 1.1% failed, 5% processing, 40% queued".into(),
    ));
    res.env.push((
        "runs".into(),
        format!(
            "case 1: {} slow / {} fast reads per pass; case 2: {} per variant; cases 3-4: {}; cases 5-6: {}; case 7: \
             {} upkeep runs per change size, 290 reads each, 600 / 120 / 40 commits for batches of 1 / 100 / 1,000; \
             case 8: {} databases per count, 5 no-ops each{}",
            cfg.reps,
            cfg.reps * cfg.light_per_heavy,
            cfg.refresh_reps,
            cfg.migration_reps,
            cfg.process_reps,
            cfg.refresh_reps.clamp(1, 5),
            cfg.migration_reps,
            std::env::var("BENCH_CASES").map(|c| format!("; only cases {c} ran (BENCH_CASES)")).unwrap_or_default()
        ),
    ));
    res.env.push(("binaries".into(), "dev profile (`cargo build --bin scanner-migrator --examples`)".into()));
    Ok(())
}
