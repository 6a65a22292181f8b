//! Case 6: the Lambda artefact, its size and start-up against a hello-world function.

use crate::{
    config::{Config, Ctx, R},
    report::Results,
    runtime,
    stats::{fmt_bytes, fmt_time, median, ratio_lower},
};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The environment the function needs to start (no AWS or database is contacted before the first poll).
pub fn function_env() -> Vec<(String, String)> {
    [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        // TLS verify-full against the built-in RDS bundle: nothing to point at, and never contacted here.
        ("DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:bench"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// From exec to the first request on the Runtime API, which must be the poll for the next invocation.
pub async fn first_poll(bin: &Path) -> R<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ctx("binding the Runtime API port")?;
    let addr = listener.local_addr().ctx("local address")?.to_string();
    let t = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env("_HANDLER", "migrate")
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .envs(function_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ctx("starting the function")?;
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        let (mut sock, _) = listener.accept().await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>((t.elapsed(), String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string()))
    })
    .await;
    let _ = child.kill().await;
    match first {
        Err(_) => Err(format!("{} made no Runtime API request within 20 s", bin.display())),
        Ok(Err(e)) => Err(format!("reading the first Runtime API request: {e}")),
        Ok(Ok((d, line))) if line.starts_with("GET /2018-06-01/runtime/invocation/next") => Ok(d.as_secs_f64()),
        Ok(Ok((_, line))) => Err(format!("{}'s first request was `{line}`, not the poll", bin.display())),
    }
}

/// From exec to the answer of a first, no-op invocation under the Runtime API emulator of the tests.
pub async fn first_invocation(bin: &Path, payload: serde_json::Value) -> R<f64> {
    let api = runtime::RuntimeApi::start().await;
    let t = Instant::now();
    let function = runtime::Function::start(bin.to_str().ok_or("path")?, &api, "migrate", &function_env());
    let outcome = api.invoke(payload, Duration::from_secs(30)).await;
    let d = t.elapsed().as_secs_f64();
    let logs = function.stop().await;
    match outcome {
        runtime::Outcome::Response(_) => Ok(d),
        other => Err(format!("{}: {other:?}\n{logs}", bin.display())),
    }
}

/// The size of `path` in a deflated zip, as the Lambda artefact is packed.
pub fn deflated(path: &Path) -> R<f64> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import io, sys, zipfile; b = io.BytesIO(); z = zipfile.ZipFile(b, 'w', zipfile.ZIP_DEFLATED); \
             z.write(sys.argv[1], 'bootstrap'); z.close(); print(len(b.getvalue()))",
        ])
        .arg(path)
        .output()
        .ctx("python3")?;
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| format!("zipping {}: no size", path.display()))
}

/// Measures case 6 and adds its rows.
pub async fn case6(cfg: &Config, res: &mut Results) -> R<()> {
    eprintln!("case 6: the Lambda artefact");
    let zip = cfg.root.join("target/lambda/scanner-migrator/bootstrap.zip");
    let zip_size = std::fs::metadata(&zip).map(|m| m.len() as f64).ok();
    let m = "Lambda zip (arm64 release, `make build`)";
    match zip_size {
        Some(b) => res.line("6", m, "scanner-migrator bootstrap.zip", fmt_bytes(b), "–".into(), "–".into(), 1),
        None => res.line("6", m, "not built (run make build)", "–".into(), "–".into(), "–".into(), 0),
    }
    let (hello_zip, ours_zip) = (deflated(&cfg.hello)?, deflated(&cfg.bin)?);
    let m = "dev-profile binary, zipped (deflate) the same way";
    res.line("6", m, "hello-world lambda_runtime function", fmt_bytes(hello_zip), "–".into(), "baseline".into(), 1);
    res.line(
        "6",
        m,
        "**scanner-migrator**",
        fmt_bytes(ours_zip),
        "–".into(),
        ratio_lower(hello_zip, ours_zip, "smaller", "larger"),
        1,
    );
    let (mut hp, mut op, mut hi, mut oi) = (vec![], vec![], vec![], vec![]);
    for rep in 0..cfg.process_reps + 1 {
        let a = first_poll(&cfg.hello).await?;
        let b = first_poll(&cfg.bin).await?;
        let c = first_invocation(&cfg.hello, serde_json::json!({})).await?;
        let d = first_invocation(&cfg.bin, serde_json::json!({"tf": {"action": "delete"}})).await?;
        if rep > 0 {
            hp.push(a);
            op.push(b);
            hi.push(c);
            oi.push(d);
        }
    }
    let w = ("faster", "slower");
    let m = "start-up: exec to the first Runtime API poll (dev profile, this host)";
    res.timing("6", m, "hello-world lambda_runtime function", &hp, None, w);
    res.timing("6", m, "**scanner-migrator** (migrate handler)", &op, Some(&hp), w);
    let m = "exec to the answer of a first no-op invocation, Runtime API emulator";
    res.timing("6", m, "hello-world lambda_runtime function", &hi, None, w);
    res.timing("6", m, "**scanner-migrator** (`{\"tf\":{\"action\":\"delete\"}}`)", &oi, Some(&hi), w);
    res.headlines.push(format!(
        "The Lambda: {}; start-up to the first Runtime API poll {} vs {} for a hello-world function ({}, dev \
         profile).",
        match zip_size {
            Some(b) => format!("the arm64 zip is {}", fmt_bytes(b)),
            None => "the arm64 zip is not built (run make build)".into(),
        },
        fmt_time(median(&op)),
        fmt_time(median(&hp)),
        ratio_lower(median(&hp), median(&op), "faster", "slower"),
    ));
    res.notes.push(format!(
        "**The Lambda artefact.** The zip is `make build`'s arm64 release artefact when present (its hello-world \
         twin would need a release cross-build, which the benchmark does not do); the side-by-side sizes are the \
         dev-profile host binaries (not stripped) deflated as the zip packs them. Start-up: {} runs each, \
         interleaved, after one warm-up: the binary is exec'd as Lambda execs `bootstrap` (its environment only, \
         `DB_SECRET_ARN` set, nothing contacted before the poll) and timed to the first request on a Runtime API \
         socket; then to the answer of a first invocation under the tests' Runtime API emulator (a no-op for ours: \
         Terraform's delete). Cold start on AWS adds the download and the sandbox, which this does not see.",
        cfg.process_reps
    ));
    Ok(())
}
