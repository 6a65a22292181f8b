//! `make invoke`: the payload it sends is one the migrate handler accepts, it never lets the AWS CLI retry a
//! synchronous invoke, and it fails when the function fails. Against AWS CLI v2 (not on PyPI), the `aws` on
//! PATH is a stand-in that records its arguments and answers like `aws lambda invoke`; the real AWS CLI v1
//! (`awscli` from PyPI, in .venv) invokes the real function through the Lambda stand-in of tf_apply.rs.

use std::{path::Path, process::Command};

use scanner_migrator::{
    handlers::{MigrateRequest, parse_migrate_event},
    runner::Command as Cmd,
};
use serde_json::{Value, json};

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
        "#!/usr/bin/env bash\n[ \"$1\" = --version ] && {{ echo 'aws-cli/2.27.0 Python/3.13.3 Linux/6.8 exe/x86_64'; exit; }}\n\
         printf '%s\\n' \"$@\" > '{args}'\necho \"${{AWS_MAX_ATTEMPTS:-unset}}\" > '{attempts}'\n\
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
    // v2 reads --payload as base64 without it.
    assert!(run.args.windows(2).any(|w| w == ["--cli-binary-format", "raw-in-base64-out"]), "{:?}", run.args);
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

/// The real AWS CLI v1 (`awscli` from PyPI), installed into .venv beside moto by `make tools`.
fn aws_v1_bin_dir() -> std::path::PathBuf {
    let dir = match std::env::var("MOTO_SERVER") {
        Ok(moto) => Path::new(&moto).parent().unwrap().to_path_buf(),
        Err(_) => crate::support::pg::root().join(".venv/bin"),
    };
    let version = Command::new(dir.join("aws")).arg("--version").output();
    let version =
        version.map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr));
    match version {
        Ok(v) if v.starts_with("aws-cli/1.") => dir,
        other => panic!("no AWS CLI v1 at {}/aws ({other:?}): run `make tools`, which installs awscli", dir.display()),
    }
}

/// Runs `cmd` (argv) or a shell line with the real AWS CLI v1 first on PATH, talking to `endpoint`.
fn with_aws_v1(bin: &Path, endpoint: &str, mut cmd: Command) -> (bool, String, String) {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    // No profile, config or credentials of whoever runs the tests.
    let out = cmd
        .env("PATH", path)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_MAX_ATTEMPTS")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The function's result: the last line `make invoke` prints (the CLI's metadata comes first).
fn result_of(stdout: &str) -> Value {
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: no result in {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_invoke_runs_the_real_function_with_the_real_aws_cli_v1() {
    use crate::support::{all_versions, lambda_standin::LambdaStandIn, moto, pg::server};

    let bin = aws_v1_bin_dir();
    let fx = crate::lambda::Fixture::rotation().await;
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("bootstrap.zip");
    crate::tf_apply::build_zip(&zip);

    // The function in moto as the module makes it (handler, environment; no ALLOW_ROLLBACK), created with v1.
    let function = format!("v1-{}-migrate", fx.db.name);
    let role = format!("v1-{}", fx.db.name);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let environment = json!({"Variables": {
        "DB_SECRET_ARN": fx.secret_arn, "DB_CA_BUNDLE": server().ca, "DB_CONNECT_TIMEOUT_S": "5"}})
    .to_string();
    let zip_arg = format!("fileb://{}", zip.display());
    let setup: [Vec<&str>; 2] = [
        vec!["iam", "create-role", "--role-name", &role, "--assume-role-policy-document", trust],
        vec![
            "lambda",
            "create-function",
            "--function-name",
            &function,
            "--runtime",
            "provided.al2023",
            "--handler",
            "migrate",
            "--timeout",
            "60",
            "--zip-file",
            &zip_arg,
            "--environment",
            &environment,
            "--role",
        ],
    ];
    let role_arn = format!("arn:aws:iam::123456789012:role/{role}");
    for (i, args) in setup.iter().enumerate() {
        let mut cmd = Command::new("aws");
        cmd.args(args);
        if i == 1 {
            cmd.arg(&role_arn);
        }
        let (ok, out, err) = tokio::task::block_in_place(|| with_aws_v1(&bin, moto::endpoint(), cmd));
        assert!(ok, "aws {args:?}: {out}{err}");
    }
    let standin = LambdaStandIn::start(moto::endpoint(), &zip, moto::aws_env()).await;

    let make = |args: &[&str]| {
        let mut cmd = Command::new("make");
        cmd.args(["-s", "--no-print-directory", "-C", env!("CARGO_MANIFEST_DIR"), "invoke"])
            .arg(format!("FUNCTION={function}"))
            .args(args);
        tokio::task::block_in_place(|| with_aws_v1(&bin, &standin.url, cmd))
    };

    let (ok, out, err) = make(&["CMD=status"]);
    assert!(ok, "make invoke CMD=status with AWS CLI v1: {out}{err}");
    assert!(!err.contains("Unknown options"), "{err}");
    let status = result_of(&out);
    assert!(status["history"].as_array().is_some_and(Vec::is_empty), "nothing applied yet: {status:#}");

    let (ok, out, err) = make(&["CMD=plan"]);
    assert!(ok, "{out}{err}");
    assert_eq!(result_of(&out)["status"], "planned", "{out}");

    let (ok, out, err) = make(&["CMD=migrate"]);
    assert!(ok, "{out}{err}");
    assert_eq!(result_of(&out)["status"], "applied", "{out}");
    assert_eq!(fx.db.history().await, all_versions(), "migrate applied every migration");

    // Rollback over Lambda is refused without ALLOW_ROLLBACK: a function error, so the target fails.
    let (ok, out, err) = make(&["CMD=rollback", "TARGET=1"]);
    assert!(!ok, "make invoke succeeded on a refused rollback: {out}{err}");
    assert!(out.contains("FunctionError"), "the CLI's metadata is shown: {out}");
    assert_eq!(result_of(&out)["errorType"], "RollbackNotAllowed", "{out}");
    assert_eq!(fx.db.history().await, all_versions(), "nothing was rolled back");

    // The commands the module's invoke_command output and the README print, as a user pastes them.
    let output =
        crate::terraform::invoke_command_output().replace("${aws_lambda_function.migrate.function_name}", &function);
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let printed = readme
        .split("```sh\n")
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("aws lambda invoke"))
        .expect("the README prints an aws lambda invoke command")
        .replace("scanner-migrator-migrate", &function);
    for (what, line, command) in [("invoke_command", &output, "status"), ("README", &printed, "plan")] {
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", line]);
        let (ok, out, err) = tokio::task::block_in_place(|| with_aws_v1(&bin, &standin.url, cmd));
        assert!(ok, "{what} with AWS CLI v1: {line}\n{out}{err}");
        let last = standin.invocations().pop().unwrap();
        assert_eq!(last.payload, json!({ "command": command }), "{what}");
        assert!(out.contains(&last.outcome.ok().to_string()), "{what} prints the result: {out}");
    }

    // What the stand-in ran: the payloads as sent, unencoded (v1 sends --payload and fileb:// as given).
    let sent: Vec<Value> = standin.invocations().iter().map(|i| i.payload.clone()).collect();
    assert_eq!(
        sent,
        [
            json!({"command": "status"}),
            json!({"command": "plan"}),
            json!({"command": "migrate"}),
            json!({"command": "rollback", "target": 1}),
            json!({"command": "status"}),
            json!({"command": "plan"}),
        ]
    );
}
