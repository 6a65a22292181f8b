//! Runs scanner-migrator the way Lambda runs it: the real binary under a local Lambda Runtime
//! API, one invocation per payload, printed as `aws lambda invoke` prints them.
//!
//! `local_lambda --handler migrate|refresh [--timeout-s N] PAYLOAD...`
//! The function gets this process's DB_*, AWS_*, LOCK_*, ... variables, as Terraform would set them.

// The tests use all of it; the demo only part.
#[allow(dead_code)]
#[path = "../tests/it/support/runtime.rs"]
mod runtime;

use std::{process::ExitCode, time::Duration};

const PASSED_THROUGH: &[&str] =
    &["DB_", "AWS_", "LOCK_", "ADVISORY_LOCK_", "STATEMENT_TIMEOUT", "SNAPSHOT_", "REFRESH_", "RUST_LOG"];

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut handler = String::from("migrate");
    let mut timeout = Duration::from_secs(300);
    let mut payloads = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--handler" => handler = args.next().unwrap_or_default(),
            "--timeout-s" => timeout = Duration::from_secs(args.next().and_then(|s| s.parse().ok()).unwrap_or(300)),
            payload => match serde_json::from_str(payload) {
                Ok(v) => payloads.push(v),
                Err(e) => {
                    eprintln!("local_lambda: payload {payload} is not JSON: {e}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("scanner-migrator")))
        .filter(|p| p.is_file())
        .expect("target/debug/scanner-migrator: run `cargo build --bin scanner-migrator` first");
    let env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| PASSED_THROUGH.iter().any(|p| k.starts_with(p))).collect();
    let api = runtime::RuntimeApi::start().await;
    let function = runtime::Function::start(bin.to_str().unwrap(), &api, &handler, &env);
    let mut failed = false;
    for payload in payloads {
        println!(
            "\n$ aws lambda invoke --function-name scanner-migrator-{handler} --cli-binary-format raw-in-base64-out --payload '{payload}' out.json"
        );
        let outcome = api.invoke(payload, timeout).await;
        failed |= !matches!(outcome, runtime::Outcome::Response(_));
        println!("{}", outcome.as_aws_cli());
    }
    let logs = function.stop().await;
    eprintln!("\n--- the function's log lines (CloudWatch Logs, in AWS) ---\n{logs}");
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
