//! A hello-world Lambda on the same runtime crate and async runtime as scanner-migrator, for the
//! start-up comparison in `make bench` (case 6): what any Rust Lambda costs before it does anything.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(json!({"hello": "world", "request_id": event.context.request_id}))
    }))
    .await
}
