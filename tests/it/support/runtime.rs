//! A Lambda Runtime API server (the protocol Lambda speaks to a custom runtime), and the real
//! binary started under it as Lambda starts `bootstrap`. Shared by the tests and `make demo`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{mpsc, oneshot},
};

/// How an invocation ended, as `aws lambda invoke` reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// StatusCode 200, the function's result.
    Response(Value),
    /// StatusCode 200 with `FunctionError: Unhandled`: `errorType` and `errorMessage`.
    Error { error_type: String, error_message: String },
    /// The runtime reported `/init/error` (or died) before it could take the invocation.
    InitError { error_type: String, error_message: String },
}

impl Outcome {
    /// The result document, or panics with the error.
    pub fn ok(&self) -> &Value {
        match self {
            Outcome::Response(v) => v,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    /// (errorType, errorMessage) of a failed invocation, or panics.
    pub fn err(&self) -> (String, String) {
        match self {
            Outcome::Error { error_type, error_message } | Outcome::InitError { error_type, error_message } => {
                (error_type.clone(), error_message.clone())
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// What `aws lambda invoke --cli-binary-format raw-in-base64-out out.json` shows: the
    /// response metadata and the payload file.
    pub fn as_aws_cli(&self) -> String {
        let (meta, payload) = match self {
            Outcome::Response(v) => (serde_json::json!({"StatusCode": 200, "ExecutedVersion": "$LATEST"}), v.clone()),
            Outcome::Error { error_type, error_message } => (
                serde_json::json!({"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST"}),
                serde_json::json!({"errorType": error_type, "errorMessage": error_message}),
            ),
            Outcome::InitError { error_type, error_message } => (
                serde_json::json!({"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST"}),
                serde_json::json!({"errorType": error_type, "errorMessage": error_message}),
            ),
        };
        format!(
            "{}\n$ cat out.json\n{}",
            serde_json::to_string_pretty(&meta).unwrap(),
            serde_json::to_string_pretty(&payload).unwrap()
        )
    }
}

struct Invocation {
    id: String,
    payload: Value,
    deadline_ms: u64,
}

#[derive(Default)]
struct Shared {
    queue: tokio::sync::Mutex<Option<mpsc::Receiver<Invocation>>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<Outcome>>,
}

/// The Runtime API on 127.0.0.1, a free port.
pub struct RuntimeApi {
    /// Where the runtime finds it (`AWS_LAMBDA_RUNTIME_API`).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    sender: mpsc::Sender<Invocation>,
    next_id: std::sync::atomic::AtomicUsize,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut guard = shared.queue.lock().await;
    let Some(rx) = guard.as_mut() else { return (StatusCode::GONE, HeaderMap::new(), String::new()) };
    match rx.recv().await {
        Some(inv) => {
            let mut headers = HeaderMap::new();
            headers.insert("lambda-runtime-aws-request-id", inv.id.parse().unwrap());
            headers.insert("lambda-runtime-deadline-ms", inv.deadline_ms.to_string().parse().unwrap());
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:scanner-migrator".parse().unwrap(),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".parse().unwrap(),
            );
            headers.insert("content-type", "application/json".parse().unwrap());
            (StatusCode::OK, headers, inv.payload.to_string())
        }
        None => (StatusCode::GONE, HeaderMap::new(), String::new()),
    }
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    if let Some(tx) = shared.waiting.lock().unwrap().remove(&id) {
        let _ = tx.send(Outcome::Response(value));
    }
    StatusCode::ACCEPTED
}

fn diagnostic(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    (
        v["errorType"].as_str().unwrap_or("Unknown").to_string(),
        v["errorMessage"].as_str().unwrap_or(&String::from_utf8_lossy(body)).to_string(),
    )
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let (error_type, error_message) = diagnostic(&body);
    if let Some(tx) = shared.waiting.lock().unwrap().remove(&id) {
        let _ = tx.send(Outcome::Error { error_type, error_message });
    }
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let (error_type, error_message) = diagnostic(&body);
    let outcome = Outcome::InitError { error_type, error_message };
    *shared.init_error.lock().unwrap() = Some(outcome.clone());
    for (_, tx) in shared.waiting.lock().unwrap().drain() {
        let _ = tx.send(outcome.clone());
    }
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    /// Starts the server.
    pub async fn start() -> Self {
        let (sender, receiver) = mpsc::channel(16);
        let shared = Arc::new(Shared { queue: tokio::sync::Mutex::new(Some(receiver)), ..Default::default() });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi { addr, shared, sender, next_id: Default::default(), server }
    }

    /// Invokes the function with `timeout` as its configured timeout; waits for the outcome.
    pub async fn invoke(&self, payload: Value, timeout: Duration) -> Outcome {
        if let Some(init) = self.shared.init_error.lock().unwrap().clone() {
            return init;
        }
        let n = self.next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().unwrap().insert(id.clone(), tx);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let inv = Invocation { id, payload, deadline_ms: now_ms + timeout.as_millis() as u64 };
        self.sender.send(inv).await.expect("runtime API server running");
        // Lambda would kill the function at the deadline; a little slack to observe that it did not need to.
        match tokio::time::timeout(timeout + Duration::from_secs(10), rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => {
                Outcome::InitError { error_type: "Runtime.ExitError".into(), error_message: "runtime gone".into() }
            }
            Err(_) => Outcome::Error {
                error_type: "Sandbox.Timedout".into(),
                error_message: format!("no answer within {timeout:?}"),
            },
        }
    }
}

/// The binary running as a Lambda function, with everything it printed.
pub struct Function {
    child: tokio::process::Child,
    /// Every line the function wrote to stdout and stderr (CloudWatch Logs, in AWS).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Function {
    /// Starts `bin` the way Lambda starts `bootstrap`: `_HANDLER`, `AWS_LAMBDA_RUNTIME_API`,
    /// and the function's environment (`env`), nothing else inherited but PATH.
    pub fn start(bin: &str, api: &RuntimeApi, handler: &str, env: &[(String, String)]) -> Self {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("_HANDLER", handler)
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("scanner-migrator-{handler}"))
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the function");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        Function { child, logs }
    }

    /// All log lines so far, joined.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Stops the function.
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log_text()
    }
}
