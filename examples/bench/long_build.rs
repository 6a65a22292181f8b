//! Case 9: a build several invocations long, through the Lambda path. The real binary's migrate
//! handler under the local Runtime API, every invocation given an honest deadline of T, applies 002
//! invocation after invocation the way its continuation chain does (moto's EventBridge Scheduler
//! holds each next payload; the benchmark invokes it after the chain's delay) while a writer runs;
//! the baseline is one uninterrupted session doing the same statements, as a DBA at a bastion would.

use crate::{
    config::{Config, Ctx, R},
    dataset::{copy_database, drop_db, exec, v_matview},
    load::{Writes, longest_gap, spawn_writer},
    report::Results,
    runtime,
    stats::{fmt_factor, fmt_time, median, pct, ratio_lower, with_commas},
};
use scanner_migrator::migrations::Migrations;
use serde_json::{Value, json};
use sqlx::Connection;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const DB: &str = "bench_c9";
/// The dataset made `scale` times larger, which every run copies.
const TPL: &str = "bench_c9_tpl";
/// The continuation's schedule, in moto.
const SCHEDULE: &str = "bench-c9-continue";
/// Runaway guard: a chain that has not applied 002 after this many invocations is a failure.
const MAX_INVOCATIONS: usize = 500;
/// A statement that never fits an invocation comes back at the deadline every time (no build runs
/// detached meanwhile): after this many in a row the chain is stuck.
const MAX_DEADLINES_IN_A_ROW: usize = 10;

/// moto's AWS API server (Secrets Manager for the database secret, the Scheduler for the chain),
/// ended when dropped.
struct Moto {
    endpoint: String,
    _child: tokio::process::Child,
}

impl Moto {
    /// `MOTO_SERVER`, or the worktree's `.venv/bin/moto_server` (`make tools`).
    async fn start(cfg: &Config) -> R<Moto> {
        let exe = std::env::var("MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| cfg.root.join(".venv/bin/moto_server"));
        if !exe.is_file() {
            return Err(format!("{} is missing (case 9 needs moto): run `make tools`", exe.display()));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ctx("finding a free port for moto")?
            .port();
        let child = tokio::process::Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ctx("starting moto_server")?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("moto_server did not listen on port {port} within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Moto { endpoint: format!("http://127.0.0.1:{port}"), _child: child })
    }

    async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "bench", "bench", None, None, "bench",
            ))
            .load()
            .await
    }
}

/// The sizes and settings of the case.
struct Setup {
    timeout: Duration,
    scale: i64,
    delay: Duration,
    reps: usize,
}

impl Setup {
    fn load(cfg: &Config) -> R<Setup> {
        let timeout = crate::config::env_num("BENCH_LONG_TIMEOUT_S", 5.0f64)?;
        if timeout < 4.5 {
            // The function keeps 1 s back to answer and 1.5 s to arrange its continuation, and starts a
            // migration only with 2 s left: below 4.5 s every invocation stops before 002 (seen at 3 s).
            return Err(format!(
                "BENCH_LONG_TIMEOUT_S={timeout}: below 4.5 s the function never starts 002 (1 s to answer, 1.5 s for \
                 the continuation, 2 s to start a migration)"
            ));
        }
        Ok(Setup {
            timeout: Duration::from_secs_f64(timeout),
            scale: crate::config::env_num("BENCH_LONG_SCALE", 12i64)?.max(1),
            // The chain's shortest delay (CONTINUATION_DELAY_S is whole seconds, at least 1); the smoke run
            // only proves the path.
            delay: if cfg.smoke { Duration::from_millis(200) } else { Duration::from_secs(1) },
            reps: if cfg.smoke { 1 } else { crate::config::env_num("BENCH_LONG_REPS", 2usize)?.max(1) },
        })
    }
}

/// The template of the case: the dataset with every object `scale` times (the copies' keys get a
/// suffix, so the writer's keys are still there), vacuumed. Returns its objects.
async fn build_template(cfg: &Config, scale: i64) -> R<i64> {
    copy_database(cfg, crate::config::TEMPLATE, TPL).await?;
    let mut c = cfg.server.connect(TPL).await?;
    if scale > 1 {
        exec(
            &mut c,
            &format!(
                "INSERT INTO job_objects (job_id, bucket, key, etag, size_bytes, status, created_at, updated_at)
                 SELECT job_id, bucket, key || '/' || n, etag, size_bytes, status, created_at, updated_at
                   FROM job_objects, generate_series(1, {}) AS n",
                scale - 1
            ),
        )
        .await?;
        exec(&mut c, "VACUUM (ANALYZE) job_objects").await?;
    }
    let objects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_objects").fetch_one(&mut c).await.ctx("counting")?;
    let _ = c.close().await;
    let mut admin = cfg.server.connect("postgres").await?;
    exec(&mut admin, "CHECKPOINT").await?;
    let _ = admin.close().await;
    Ok(objects)
}

/// 002's statements, in order (the first is the CREATE INDEX CONCURRENTLY measured alone).
fn statements_002() -> R<Vec<String>> {
    let m = Migrations::embedded().ctx("the embedded migrations")?;
    Ok(m.get(v_matview()?).ok_or("no migration 002")?.up.statements().iter().map(|s| s.sql.clone()).collect())
}

/// What a writer saw while something ran from `t0` to `t1`.
fn stall(commits: &[Instant], t0: Instant, t1: Instant) -> f64 {
    longest_gap(commits, t0, t1)
}

/// The baseline: 002's statements on one session with no deadline, while the writer runs.
struct Baseline {
    /// The first CREATE INDEX CONCURRENTLY alone.
    build_s: f64,
    build_stall_s: f64,
    /// All of 002's statements.
    all_s: f64,
    all_stall_s: f64,
    /// job_objects' row estimate over the build's time: the speed the Lambda is then told.
    rows_per_s: f64,
    rows: f64,
}

async fn baseline(cfg: &Config) -> R<Baseline> {
    copy_database(cfg, TPL, DB).await?;
    let mut c = cfg.server.connect(DB).await?;
    let rows: f64 =
        sqlx::query_scalar("SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = 'job_objects'::regclass")
            .fetch_one(&mut c)
            .await
            .ctx("job_objects' row estimate")?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer =
        spawn_writer(cfg.server.opts(DB), cfg.write_rate, Writes::Objects(cfg.sample_keys(10_000)), stop.clone());
    tokio::time::sleep(cfg.settle).await;
    let statements = statements_002()?;
    let t0 = Instant::now();
    let mut built = None;
    for (i, sql) in statements.iter().enumerate() {
        exec(&mut c, sql).await?;
        if i == 0 {
            built = Some(Instant::now());
        }
    }
    let t1 = Instant::now();
    tokio::time::sleep(cfg.settle).await;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.ctx("writer task")??;
    let _ = c.close().await;
    let built = built.ok_or("002 has no statements")?;
    let build_s = (built - t0).as_secs_f64();
    Ok(Baseline {
        build_s,
        build_stall_s: stall(&commits, t0, built),
        all_s: (t1 - t0).as_secs_f64(),
        all_stall_s: stall(&commits, t0, t1),
        rows_per_s: (rows / build_s).max(1.0),
        rows,
    })
}

/// Ours: invocation after invocation of the real function until it answers `applied`.
struct Chain {
    wall_s: f64,
    stall_s: f64,
    invocations: usize,
    in_progress: usize,
    deadline_continued: usize,
    /// The longest invocation, from the request to its answer.
    longest_s: f64,
}

/// The function's environment: moto, the secret, plaintext to the local server (allowed explicitly),
/// the continuation (so the function keeps its time back for the Scheduler, as deployed).
fn function_env(moto: &Moto, secret_arn: &str, rows_per_s: f64, delay: Duration) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "bench".into()),
        ("AWS_SECRET_ACCESS_KEY", "bench".into()),
        ("DB_SECRET_ARN", secret_arn.into()),
        ("DB_SSLMODE", "disable".into()),
        ("DB_ALLOW_INSECURE_TLS", "true".into()),
        ("DB_CONNECT_TIMEOUT_S", "5".into()),
        ("INDEX_BUILD_ROWS_PER_S", format!("{rows_per_s:.0}")),
        ("CONTINUATION_ROLE_ARN", "arn:aws:iam::123456789012:role/bench-scheduler".into()),
        ("CONTINUATION_SCHEDULE", SCHEDULE.into()),
        ("CONTINUATION_DELAY_S", delay.as_secs().max(1).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The payload the function scheduled for its next invocation (what the Scheduler would send), if any.
async fn scheduled(scheduler: &aws_sdk_scheduler::Client) -> R<Option<Value>> {
    match scheduler.get_schedule().name(SCHEDULE).send().await {
        Ok(s) => {
            let input = s.target().and_then(|t| t.input()).ok_or("the continuation schedule has no input")?;
            serde_json::from_str(input).map(Some).ctx("the continuation schedule's input")
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
        Err(e) => Err(format!("reading the continuation schedule from moto: {e:?}")),
    }
}

async fn chain(cfg: &Config, setup: &Setup, moto: &Moto, rows_per_s: f64) -> R<Chain> {
    copy_database(cfg, TPL, DB).await?;
    let sdk = moto.sdk().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let s = &cfg.server;
    let secret = json!({"engine": "postgres", "host": s.host, "port": s.port, "dbname": DB, "username": s.user, "password": s.password});
    let name = format!("bench/c9/{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
    let made = secrets.create_secret().name(&name).secret_string(secret.to_string()).send().await;
    let secret_arn =
        made.ctx("creating the database secret in moto")?.arn().ok_or("the secret has no ARN")?.to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let writer =
        spawn_writer(cfg.server.opts(DB), cfg.write_rate, Writes::Objects(cfg.sample_keys(10_000)), stop.clone());
    // The function starts before the clock does: a warm sandbox, as the chain's invocations a second apart find.
    let api = runtime::RuntimeApi::start().await;
    let bin = cfg.bin.to_str().ok_or("the binary's path is not UTF-8")?;
    let function =
        runtime::Function::start(bin, &api, "migrate", &function_env(moto, &secret_arn, rows_per_s, setup.delay));
    tokio::time::sleep(cfg.settle).await;
    let target = v_matview()?;
    let mut payload = json!({"command": "migrate", "target": target});
    let mut run =
        Chain { wall_s: 0.0, stall_s: 0.0, invocations: 0, in_progress: 0, deadline_continued: 0, longest_s: 0.0 };
    let mut in_a_row = 0;
    let t0 = Instant::now();
    let outcome = loop {
        if run.invocations >= MAX_INVOCATIONS {
            break Err(format!("002 was not applied after {MAX_INVOCATIONS} invocations"));
        }
        run.invocations += 1;
        let asked = Instant::now();
        let answer = api.invoke(payload.clone(), setup.timeout).await;
        let took = asked.elapsed();
        run.longest_s = run.longest_s.max(took.as_secs_f64());
        if took > setup.timeout {
            break Err(format!(
                "invocation {} answered after {took:?}, past its {:?} timeout",
                run.invocations, setup.timeout
            ));
        }
        match &answer {
            runtime::Outcome::Response(v) if v["status"] == "applied" => {
                if v["verification"]["ok"] != true || v["schema_version"] != target {
                    break Err(format!("the last answer says applied but not verified at {target}: {v}"));
                }
                break Ok(());
            }
            runtime::Outcome::Response(v) if v["status"] == "in_progress" => {
                run.in_progress += 1;
                in_a_row = 0;
            }
            // Work left at the deadline between statements: the function continues itself as well.
            runtime::Outcome::Error { error_type, error_message } if error_type == "DeadlineReached" => {
                run.deadline_continued += 1;
                in_a_row += 1;
                let short: String = error_message.chars().take(300).collect();
                eprintln!("    invocation {} stopped at its deadline: {short}", run.invocations);
                if in_a_row >= MAX_DEADLINES_IN_A_ROW {
                    break Err(format!(
                        "stuck: {in_a_row} invocations in a row stopped at the deadline with work left (a statement \
                         cut by one deadline runs detached from the next invocation on, so this is a statement \
                         that cannot run detached, or a migration that never gets to start in the timeout less \
                         2.5 s: raise BENCH_LONG_TIMEOUT_S); the last said: {error_message}"
                    ));
                }
            }
            other => break Err(format!("invocation {}: {other:?}", run.invocations)),
        }
        match scheduled(&scheduler).await? {
            Some(next) => payload = next,
            None => break Err(format!("invocation {} arranged no continuation: {answer:?}", run.invocations)),
        }
        tokio::time::sleep(setup.delay).await;
    };
    let t1 = Instant::now();
    let logs = function.stop().await;
    tokio::time::sleep(cfg.settle).await;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.ctx("writer task")??;
    if let Err(e) = outcome {
        let tail: Vec<&str> = logs.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!("case 9: {e}\nthe function's last log lines:\n{}", tail.join("\n")));
    }
    if scheduled(&scheduler).await?.is_some() {
        return Err("case 9: a continuation schedule remains after 002 was applied".into());
    }
    let mut c = cfg.server.connect(DB).await?;
    let invalid: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        .fetch_one(&mut c)
        .await
        .ctx("checking the indexes")?;
    let _ = c.close().await;
    if invalid > 0 {
        return Err(format!("case 9: {invalid} INVALID indexes after 002 was applied"));
    }
    run.wall_s = (t1 - t0).as_secs_f64();
    run.stall_s = stall(&commits, t0, t1);
    Ok(run)
}

/// Measures case 9 and adds its rows.
pub async fn case9(cfg: &Config, res: &mut Results) -> R<()> {
    let setup = Setup::load(cfg)?;
    let t = setup.timeout.as_secs_f64();
    eprintln!("case 9: 002 through the Lambda chain, {t:.0} s invocations, against one uninterrupted session");
    let moto = Moto::start(cfg).await?;
    let objects = build_template(cfg, setup.scale).await?;
    eprintln!("  {} objects (the dataset {}×)", with_commas(objects), setup.scale);
    let (mut bases, mut runs, mut speeds) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..setup.reps {
        let base = baseline(cfg).await?;
        // Smoke: the tiny build would fit; an assumed 100 rows/s makes the estimate call for detaching anyway.
        let speed = if cfg.smoke { 100.0 } else { base.rows_per_s };
        eprintln!(
            "  rep {}: uninterrupted build {} ({:.1}× T, {:.0} rows/s), all of 002 {}",
            rep + 1,
            fmt_time(base.build_s),
            base.build_s / t,
            base.rows / base.build_s,
            fmt_time(base.all_s)
        );
        let run = chain(cfg, &setup, &moto, speed).await?;
        eprintln!(
            "  rep {}: the chain applied 002 in {} over {} invocations ({} in_progress, {} at a deadline)",
            rep + 1,
            fmt_time(run.wall_s),
            run.invocations,
            run.in_progress,
            run.deadline_continued
        );
        // The point of the case (and of its smoke run) is the detached path: it must have been taken.
        if run.in_progress == 0 {
            return Err(format!(
                "case 9: no build ran detached (the build took {} against {t:.0} s invocations): raise BENCH_ROWS or \
                 BENCH_LONG_SCALE, or lower BENCH_LONG_TIMEOUT_S",
                fmt_time(base.build_s)
            ));
        }
        speeds.push(speed);
        bases.push(base);
        runs.push(run);
    }
    drop_db(cfg, DB).await?;
    drop_db(cfg, TPL).await?;
    let b = |f: fn(&Baseline) -> f64| bases.iter().map(f).collect::<Vec<f64>>();
    let o = |f: fn(&Chain) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let ours = format!("**ours: the Lambda chain, {t:.0} s invocations, 002's long statements detached**");
    let one_build = "one session, no deadline: CREATE INDEX CONCURRENTLY idx_job_objects_job_status alone";
    let all_002 = "one session, no deadline: all of 002's statements";
    let w = ("faster", "slower");
    let m = "wall time to apply 002 under the write load (ours: first request to the `applied` answer)";
    res.timing("9", m, one_build, &b(|x| x.build_s), None, w);
    res.timing("9", m, all_002, &b(|x| x.all_s), None, w);
    res.timing("9", m, &ours, &o(|x| x.wall_s), Some(&b(|x| x.build_s)), w);
    res.timing("9", m, &format!("{ours} (vs all of 002)"), &o(|x| x.wall_s), Some(&b(|x| x.all_s)), w);
    let inv = o(|x| x.invocations as f64);
    let m = "invocations until 002 is applied (p99 column: worst run)";
    res.line(
        "9",
        m,
        &format!(
            "{ours}: {} answered in_progress, {} stopped at the deadline with work left (medians)",
            median(&o(|x| x.in_progress as f64)),
            median(&o(|x| x.deadline_continued as f64))
        ),
        format!("{:.0}", median(&inv)),
        format!("{:.0}", pct(&inv, 99.0)),
        "–".into(),
        inv.len(),
    );
    let m = "longest invocation, request to answer (must stay under the timeout)";
    let longest = o(|x| x.longest_s);
    res.line(
        "9",
        m,
        &format!("{ours}: timeout {t:.0} s"),
        fmt_time(median(&longest)),
        fmt_time(pct(&longest, 99.0)),
        format!("{:.0}% of the timeout at worst", pct(&longest, 99.0) / t * 100.0),
        longest.len(),
    );
    let s = ("shorter", "longer");
    let m = "longest writer stall while 002 applies";
    res.timing("9", m, one_build, &b(|x| x.build_stall_s), None, s);
    res.timing("9", m, all_002, &b(|x| x.all_stall_s), None, s);
    res.timing("9", m, &ours, &o(|x| x.stall_s), Some(&b(|x| x.all_stall_s)), s);
    let ratios: Vec<f64> = bases.iter().map(|x| x.build_s / t).collect();
    let speed_note = if cfg.smoke {
        "assumed 100 rows/s (smoke)".to_string()
    } else {
        format!("measured: {} rows/s, the uninterrupted build's", with_commas(median(&speeds) as i64))
    };
    res.line(
        "9",
        "first index build ÷ invocation timeout (the uninterrupted build's time over T)",
        &format!("T = {t:.0} s; INDEX_BUILD_ROWS_PER_S {speed_note}"),
        fmt_factor(median(&ratios)),
        fmt_factor(pct(&ratios, 99.0)),
        "–".into(),
        ratios.len(),
    );
    res.headlines.push(format!(
        "A build {} the invocation's {t:.0} s timeout, through the Lambda: {} invocations apply 002 in {} vs {} for \
         the same statements in one uninterrupted session ({}); the longest writer stall {} vs {}.",
        fmt_factor(median(&ratios)),
        median(&inv),
        fmt_time(median(&o(|x| x.wall_s))),
        fmt_time(median(&b(|x| x.all_s))),
        ratio_lower(median(&b(|x| x.all_s)), median(&o(|x| x.wall_s)), "faster", "slower"),
        fmt_time(median(&o(|x| x.stall_s))),
        fmt_time(median(&b(|x| x.all_stall_s))),
    ));
    res.notes.push(format!(
        "**A build several invocations long.** Each run gets two fresh file copies of the dataset at schema 001, \
         every object {}× (BENCH_LONG_SCALE; {} objects), one after the other, each under the writer of case 3 ({} commits/s offered, from {:.1} s before \
         until {:.1} s after). Baseline: 002's statements, as written, on one session with no deadline (a DBA at a \
         bastion), its first CREATE INDEX CONCURRENTLY timed alone too. Ours: the real binary's migrate handler under \
         the local Lambda Runtime API, started once (a warm sandbox), its database secret in moto's Secrets Manager; \
         each invocation gets a deadline of {t:.0} s and must answer before it; the function arranges its \
         continuation in moto's EventBridge Scheduler (CONTINUATION_DELAY_S=1; with the chain configured it keeps \
         1.5 s of each invocation for that), and the benchmark invokes the scheduled payload {:.1} s after each answer, until one says \
         `applied` (verified, at 002; no schedule left; no INVALID index). INDEX_BUILD_ROWS_PER_S is the speed the \
         same run's uninterrupted build measured (rows/s), so the function's estimate is the real build time. \
         The function logs in as the server's superuser (the benchmark's dataset belongs to it). {} run(s); the \
         baseline goes first in each, as it measures the speed.",
        setup.scale,
        with_commas(objects),
        cfg.write_rate,
        cfg.settle.as_secs_f64(),
        cfg.settle.as_secs_f64(),
        setup.delay.as_secs_f64(),
        setup.reps,
    ));
    Ok(())
}
