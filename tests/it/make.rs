//! `make invoke`: the payload it sends is one the migrate handler accepts, it never lets the AWS CLI retry a
//! synchronous invoke, and it fails when the function fails. The `aws` on PATH is a stand-in that records
//! its arguments and answers like `aws lambda invoke` (there is no AWS here).

use std::{path::Path, process::Command};

use scanner_migrator::{
    handlers::{MigrateRequest, parse_migrate_event},
    runner::Command as Cmd,
};
use serde_json::Value;

struct Invoked {
    success: bool,
    stdout: String,
    args: Vec<String>,
    max_attempts: String,
}

fn make_invoke(dir: &Path, make_args: &[&str], function_error: bool) -> Invoked {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("aws");
    let (meta, result) = if function_error {
        (
            r#"{"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST"}"#,
            r#"{"errorType": "LockTimeout", "errorMessage": "held by backend pid 42"}"#,
        )
    } else {
        (r#"{"StatusCode": 200, "ExecutedVersion": "$LATEST"}"#, r#"{"status": "up_to_date"}"#)
    };
    // The last argument is the output file, as for the real CLI.
    let script = format!(
        "#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > '{args}'\necho \"${{AWS_MAX_ATTEMPTS:-unset}}\" > '{attempts}'\n\
         printf '%s' '{result}' > \"${{@: -1}}\"\necho '{meta}'\n",
        args = dir.join("args").display(),
        attempts = dir.join("attempts").display(),
    );
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new("make")
        .args(["-s", "--no-print-directory", "-C", env!("CARGO_MANIFEST_DIR"), "invoke"])
        .args(make_args)
        .env("PATH", path)
        .env_remove("AWS_MAX_ATTEMPTS")
        .output()
        .unwrap();
    Invoked {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        args: std::fs::read_to_string(dir.join("args")).unwrap().lines().map(String::from).collect(),
        max_attempts: std::fs::read_to_string(dir.join("attempts")).unwrap().trim().to_string(),
    }
}

fn payload(args: &[String]) -> Value {
    let i = args.iter().position(|a| a == "--payload").expect("--payload");
    serde_json::from_str(&args[i + 1]).unwrap()
}

#[test]
fn make_invoke_sends_payloads_the_handler_accepts_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_invoke(dir.path(), &["CMD=rollback", "TARGET=1", "FUNCTION=scanner-migrator-migrate"], false);
    assert!(run.success, "{}", run.stdout);
    assert!(run.stdout.contains(r#"{"status": "up_to_date"}"#), "the result is printed: {}", run.stdout);
    assert_eq!(run.max_attempts, "1", "a retried synchronous invoke would run the command twice");
    assert!(run.args.windows(2).any(|w| w == ["--cli-read-timeout", "900"]), "{:?}", run.args);
    assert!(run.args.windows(2).any(|w| w == ["--function-name", "scanner-migrator-migrate"]));
    let request = parse_migrate_event(&payload(&run.args)).unwrap();
    assert_eq!(request, MigrateRequest::Run(Cmd::Rollback { to: 1 }));

    let run = make_invoke(dir.path(), &["CMD=status"], false);
    assert_eq!(parse_migrate_event(&payload(&run.args)).unwrap(), MigrateRequest::Run(Cmd::Status));
}

#[test]
fn make_invoke_fails_on_a_function_error_and_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_invoke(dir.path(), &["CMD=migrate"], true);
    assert!(!run.success, "make invoke succeeded on a FunctionError: {}", run.stdout);
    assert!(run.stdout.contains("LockTimeout"), "the error is printed: {}", run.stdout);
}
