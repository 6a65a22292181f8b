//! `make bench`: the migration guide's claims ("status queries on 1M objects: ~5 seconds → ~50ms",
//! "non-blocking (no downtime)") measured side by side against the obvious alternatives, on a local
//! PostgreSQL. Prints one Markdown table of ratios; `--out FILE` writes it to FILE as well, and the
//! plots (SVG, examples/bench/plots.rs) beside it.
//!
//! `DATABASE_URL=postgres://superuser:pw@127.0.0.1:port/postgres bench [--smoke] [--out FILE]`
//! (`scripts/bench.sh` starts a throwaway server and runs this.)
//!
//! Sizes and repetitions come from the environment: `BENCH_ROWS` (objects in the measured job,
//! default 1,000,000), `BENCH_BG_ROWS` (objects of the background jobs, default = BENCH_ROWS),
//! `BENCH_BG_JOBS` (9), `BENCH_REPS` (runs of the slow queries, 100; the fast ones run 10 times as
//! often), `BENCH_REFRESH_REPS` (15), `BENCH_MIGRATION_REPS` (5), `BENCH_PROCESS_REPS` (30),
//! `BENCH_HOLD_S` (how long the long reader of case 4 holds its lock, 5), `BENCH_WRITE_RATE`
//! (the offered write load of cases 3, 4 and 7, commits per second, 200), `BENCH_CASES` (a comma list
//! such as `7` or `1,3`: only those cases run; all by default; `8` alone skips building the dataset).
//! Case 9 (a build several invocations long, through the Lambda): `BENCH_LONG_TIMEOUT_S` (each
//! invocation's timeout, 5), `BENCH_LONG_SCALE` (its copy holds every object this many times, 12),
//! `BENCH_LONG_REPS` (2); it starts moto (`MOTO_SERVER`, or `.venv/bin/moto_server` of `make tools`).
//! `--smoke` makes everything tiny, so `make test` proves the code still runs; its numbers mean nothing.

// The tests use all of it; the benchmark only part.
#[allow(dead_code)]
#[path = "../tests/it/support/runtime.rs"]
mod runtime;
#[path = "../tests/it/support/synthetic.rs"]
mod synthetic;

// The rooms, as tests/it has its files: what every case shares, then one file per case.
#[path = "bench/config.rs"]
mod config;
#[path = "bench/dataset.rs"]
mod dataset;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/plots.rs"]
mod plots;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/stats.rs"]
mod stats;

#[path = "bench/history.rs"]
mod history;
#[path = "bench/incremental.rs"]
mod incremental;
#[path = "bench/index_build.rs"]
mod index_build;
#[path = "bench/lambda.rs"]
mod lambda;
#[path = "bench/lock_wait.rs"]
mod lock_wait;
#[path = "bench/long_build.rs"]
mod long_build;
#[path = "bench/noop.rs"]
mod noop;
#[path = "bench/status_read.rs"]
mod status_read;
#[path = "bench/view_refresh.rs"]
mod view_refresh;

use std::{process::ExitCode, time::Instant};

use config::{Config, R, TEMPLATE};
use dataset::{build_dataset, drop_db};
use report::{KEEP_MARKER, Results, environment};
use stats::with_commas;

async fn run(cfg: &Config) -> R<Results> {
    let mut res = Results::default();
    eprintln!(
        "bench: {} objects in the measured job, {} in the background{}",
        with_commas(cfg.rows),
        with_commas(cfg.bg_rows),
        if cfg.smoke { " (smoke run: the numbers mean nothing)" } else { "" }
    );
    // BENCH_CASES=7 (or 1,2,...) runs only those cases.
    let only: Vec<String> =
        std::env::var("BENCH_CASES").map(|v| v.split(',').map(|c| c.trim().to_string()).collect()).unwrap_or_default();
    let run = |case: &str| only.is_empty() || only.iter().any(|c| c == case);
    // Case 8 makes its own databases; only the others read the dataset.
    if only.iter().all(|c| c == "8") && !only.is_empty() {
        environment(cfg, None, &mut res).await?;
        history::case8(cfg, &mut res).await?;
        return Ok(res);
    }
    eprintln!("building the dataset");
    let data = build_dataset(cfg, TEMPLATE).await?;
    eprintln!("  {} rows in {:.1} s", with_commas(data.total), data.build_s);
    environment(cfg, Some(&data), &mut res).await?;
    res.plots.objects = with_commas(data.total);
    if run("1") || run("2") || run("5") {
        status_read::case1(cfg, &mut res).await?;
    }
    if run("2") {
        view_refresh::case2(cfg, &mut res).await?;
    }
    if run("3") {
        index_build::case3(cfg, &mut res).await?;
    }
    if run("4") {
        lock_wait::case4(cfg, &mut res).await?;
    }
    if run("5") {
        noop::case5(cfg, &mut res).await?;
    } else {
        drop_db(cfg, "bench_v2").await?;
    }
    if run("6") {
        lambda::case6(cfg, &mut res).await?;
    }
    if run("7") {
        incremental::case7(cfg, &mut res).await?;
    }
    if run("8") {
        history::case8(cfg, &mut res).await?;
    }
    if run("9") {
        long_build::case9(cfg, &mut res).await?;
    }
    drop_db(cfg, TEMPLATE).await?;
    Ok(res)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    match run(&cfg).await {
        Ok(mut res) => {
            // The plots go beside the report: bench/ in the full run, the smoke run's temporary directory.
            if let Some(dir) = cfg.out.as_ref().and_then(|o| o.parent()) {
                let _ = std::fs::create_dir_all(dir);
                match plots::draw(dir, &res.plots) {
                    Ok(figures) => res.figures = figures,
                    Err(e) => {
                        eprintln!("bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            let title = if cfg.smoke {
                "make bench (smoke run: tiny sizes, the numbers mean nothing)"
            } else {
                "make bench: the guide's claims, measured side by side"
            };
            let md = res.markdown(title);
            println!("{md}");
            if let Some(out) = &cfg.out {
                // Sections measured by other runs (the zip, the 10M case) follow KEEP_MARKER and survive.
                let kept = std::fs::read_to_string(out)
                    .ok()
                    .and_then(|old| old.find(KEEP_MARKER).map(|i| old[i..].to_string()))
                    .unwrap_or_default();
                let md = if kept.is_empty() { md } else { format!("{}\n\n{kept}", md.trim_end()) };
                if let Err(e) = std::fs::write(out, &md) {
                    eprintln!("bench: writing {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("bench: wrote {}", out.display());
            }
            eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
