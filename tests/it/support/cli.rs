//! Runs the real binary as a user would.

use serde_json::Value;

/// What one run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// stdout parsed as JSON (the result or the error).
    pub json: Value,
    /// stderr (the logs).
    pub stderr: String,
}

impl Run {
    /// `errorType` of a failed run.
    pub fn error_type(&self) -> &str {
        self.json["errorType"].as_str().unwrap_or("")
    }
    /// `errorMessage` of a failed run.
    pub fn error_message(&self) -> &str {
        self.json["errorMessage"].as_str().unwrap_or("")
    }
    /// `status` of a successful run.
    pub fn status(&self) -> &str {
        self.json["status"].as_str().unwrap_or("")
    }
    /// Versions listed under `key` (applied, rolled_back, pending).
    pub fn versions(&self, key: &str) -> Vec<i64> {
        self.json[key].as_array().map(|a| a.iter().filter_map(|m| m["version"].as_i64()).collect()).unwrap_or_default()
    }
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scanner-migrator")
}

/// Runs `scanner-migrator ARGS` with only the environment given (plus PATH/HOME).
pub async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    super::secrets::assert_absent("stdout", &stdout);
    super::secrets::assert_absent("stderr", &stderr);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    Run { code: out.status.code().unwrap_or(-1), json, stderr }
}

/// `scanner-migrator --database-url URL ARGS...`, trusting the test server's CA. The URLs name
/// 127.0.0.1 and the certificate is for `localhost`, hence verify-ca (the chain is still verified).
pub async fn migrator(url: &str, args: &[&str]) -> Run {
    migrator_on(super::pg::server(), url, args).await
}

/// [`migrator`] against `server` (a private one has a CA of its own).
pub async fn migrator_on(server: &super::pg::Server, url: &str, args: &[&str]) -> Run {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    let ca = server.ca.display().to_string();
    cli(&all, &[("DB_SSLMODE", "verify-ca"), ("DB_CA_BUNDLE", &ca)]).await
}
