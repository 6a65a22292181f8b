//! Wiring only: the Lambda runtime when Lambda started us, the command line otherwise.
#![recursion_limit = "256"]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        match scanner_migrator::handlers::run_lambda().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    } else {
        scanner_migrator::cli::main().await
    }
}
