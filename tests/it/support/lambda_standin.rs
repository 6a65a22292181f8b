//! A stand-in for the Lambda API in front of moto, for `terraform apply` against moto (tf_apply.rs).
//!
//! moto serves every Lambda call Terraform makes except `Invoke`, which needs Docker. This server answers
//! `Invoke` the way Lambda does, by running the real `bootstrap` from the zip Terraform uploaded (checked
//! against the CodeSha256 moto holds) under the tests' Runtime API emulator, with the function's
//! environment as Terraform set it (GetFunctionConfiguration, from moto); everything else is proxied to
//! moto unchanged, but for one moto quirk handled here (not in the module): moto does not keep a
//! function's `LoggingConfig`, so the stand-in remembers the one Terraform sent and adds it to what moto
//! answers, as Lambda would.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::Response,
};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::runtime::{Function, Outcome, RuntimeApi};

/// One `Invoke` the stand-in answered.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The function's name.
    pub function: String,
    /// The payload as sent (for aws_lambda_invocation: the input plus `tf`).
    pub payload: Value,
    /// What the function answered.
    pub outcome: Outcome,
    /// What the function logged.
    pub logs: String,
}

struct Shared {
    moto: String,
    zip: PathBuf,
    /// The process environment the function gets besides its own (how it reaches moto: in Lambda, the role's
    /// credentials and the region).
    aws_env: Vec<(String, String)>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    invocations: Mutex<Vec<Invocation>>,
    next_payload: Mutex<Option<Value>>,
    logging_configs: Mutex<HashMap<String, Value>>,
    unpacked: Mutex<HashMap<String, tempfile::TempDir>>,
}

/// The stand-in on 127.0.0.1, a free port.
pub struct LambdaStandIn {
    /// What the provider's `lambda` endpoint points at.
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LambdaStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LambdaStandIn {
    /// Starts it in front of `moto`. `zip` is the file Terraform uploads: Invoke runs what it holds, once
    /// moto's CodeSha256 for the function says it is what was uploaded.
    pub async fn start(moto: &str, zip: &Path, aws_env: Vec<(String, String)>) -> Self {
        let shared = Arc::new(Shared {
            moto: moto.trim_end_matches('/').to_string(),
            zip: zip.to_path_buf(),
            aws_env,
            client: Client::builder(TokioExecutor::new()).build_http(),
            invocations: Mutex::default(),
            next_payload: Mutex::default(),
            logging_configs: Mutex::default(),
            unpacked: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LambdaStandIn { url, shared, server }
    }

    /// The next Invoke gets this payload instead of the one sent, so the real function answers something
    /// Terraform's input never asks for (a `plan` where `migrate` was sent: a result that is not a finished
    /// migration).
    pub fn replace_next_payload(&self, payload: Value) {
        *self.shared.next_payload.lock().unwrap() = Some(payload);
    }

    /// The function's configuration as moto holds it (GetFunctionConfiguration).
    pub async fn configuration(&self, name: &str) -> Value {
        moto_json(&self.shared, &format!("/2015-03-31/functions/{name}/configuration")).await.unwrap()
    }

    /// Every Invoke so far, in order.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.shared.invocations.lock().unwrap().clone()
    }
}

fn respond(status: StatusCode, headers: &[(&'static str, String)], body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut().insert(*k, HeaderValue::from_str(v).unwrap());
    }
    r
}

/// `/2015-03-31/functions/{name}/{rest}` -> (name, rest).
fn function_path(uri: &Uri) -> Option<(String, String)> {
    let rest = uri.path().strip_prefix("/2015-03-31/functions/")?;
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    Some((name.to_string(), tail.to_string()))
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    match (function_path(&parts.uri), &parts.method) {
        (Some((name, tail)), &Method::POST) if tail == "invocations" => {
            invoke(&shared, &name, &parts.headers, &body).await
        }
        (path, method) => {
            // CreateFunction / UpdateFunctionConfiguration: remember the LoggingConfig moto drops.
            let create = path.is_none() && parts.uri.path().trim_end_matches('/') == "/2015-03-31/functions";
            let update = matches!(&path, Some((_, t)) if t == "configuration") && method == Method::PUT;
            if (create && method == Method::POST) || update {
                let sent: Value = serde_json::from_slice(&body).unwrap_or_default();
                let name = match &path {
                    Some((n, _)) => n.clone(),
                    None => sent["FunctionName"].as_str().unwrap_or_default().to_string(),
                };
                if let Some(config) = sent.get("LoggingConfig") {
                    shared.logging_configs.lock().unwrap().insert(name, config.clone());
                }
            }
            let (status, headers, answer) = proxy(&shared, &parts.method, &parts.uri, &parts.headers, body).await;
            // GetFunction, GetFunctionConfiguration, CreateFunction, UpdateFunctionConfiguration answers.
            let answer = match &path {
                Some((name, tail)) if status.is_success() && (tail.is_empty() || tail == "configuration") => {
                    with_logging_config(&shared, name, answer)
                }
                None if create && status.is_success() => {
                    let v: Value = serde_json::from_slice(&answer).unwrap_or_default();
                    let name = v["FunctionName"].as_str().unwrap_or_default().to_string();
                    with_logging_config(&shared, &name, answer)
                }
                _ => answer,
            };
            let mut r = respond(status, &[], answer);
            for (k, v) in headers.iter() {
                if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                    r.headers_mut().append(k, v.clone());
                }
            }
            r
        }
    }
}

fn with_logging_config(shared: &Shared, name: &str, answer: Vec<u8>) -> Vec<u8> {
    let Some(config) = shared.logging_configs.lock().unwrap().get(name).cloned() else { return answer };
    let Ok(mut v) = serde_json::from_slice::<Value>(&answer) else { return answer };
    // GetFunction nests the configuration; the others are the configuration.
    let target = if v.get("Configuration").is_some() { &mut v["Configuration"] } else { &mut v };
    if target.get("LoggingConfig").is_none_or(Value::is_null) {
        target["LoggingConfig"] = config;
    }
    serde_json::to_vec(&v).unwrap()
}

async fn proxy(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let target = format!("{}{}", shared.moto, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut request = axum::http::Request::builder().method(method.clone()).uri(target);
    for (k, v) in headers {
        if k != "host" && k != "content-length" {
            request = request.header(k, v);
        }
    }
    let request = request.body(Full::new(body)).unwrap();
    match shared.client.request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
            (parts.status, parts.headers, body)
        }
        Err(e) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), format!("stand-in: moto unreachable: {e}").into_bytes()),
    }
}

/// A Lambda API GET to moto, which picks the service from the credential scope of the signature.
async fn moto_json(shared: &Shared, path: &str) -> Result<Value, String> {
    let uri: Uri = path.parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=0",
        ),
    );
    let (status, _, body) = proxy(shared, &Method::GET, &uri, &headers, Bytes::new()).await;
    if !status.is_success() {
        return Err(format!("stand-in: {path}: {status} {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("stand-in: {path}: {e}"))
}

/// The uploaded zip, unpacked once per CodeSha256: Lambda's /var/task.
fn task_dir(shared: &Shared, code_sha256: &str) -> Result<PathBuf, String> {
    let mut unpacked = shared.unpacked.lock().unwrap();
    if let Some(dir) = unpacked.get(code_sha256) {
        return Ok(dir.path().to_path_buf());
    }
    let bytes = std::fs::read(&shared.zip).map_err(|e| format!("{}: {e}", shared.zip.display()))?;
    let ours = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
    if ours != code_sha256 {
        return Err(format!(
            "moto holds code {code_sha256}, but {} hashes to {ours}: the stand-in can only run the zip it was given",
            shared.zip.display()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&shared.zip)
        .arg(dir.path())
        .output()
        .map_err(|e| format!("python3 -m zipfile: {e}"))?;
    if !out.status.success() {
        return Err(format!("unzip: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // zipfile does not keep the mode bits; Lambda runs bootstrap as an executable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("bootstrap"), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("no bootstrap in the zip: {e}"))?;
    let path = dir.path().to_path_buf();
    unpacked.insert(code_sha256.to_string(), dir);
    Ok(path)
}

async fn invoke(shared: &Shared, name: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let invocation_type =
        headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).unwrap_or("RequestResponse");
    if invocation_type != "RequestResponse" {
        let msg = format!("stand-in: only synchronous invocations are emulated, not {invocation_type}");
        return respond(StatusCode::NOT_IMPLEMENTED, &[], msg.into_bytes());
    }
    let config = match moto_json(shared, &format!("/2015-03-31/functions/{name}/configuration")).await {
        Ok(config) => config,
        Err(e) => return respond(StatusCode::INTERNAL_SERVER_ERROR, &[], e.into_bytes()),
    };
    let task = match task_dir(shared, config["CodeSha256"].as_str().unwrap_or_default()) {
        Ok(dir) => dir,
        Err(e) => return respond(StatusCode::INTERNAL_SERVER_ERROR, &[], e.into_bytes()),
    };
    // The function's environment as Terraform set it; /var/task is where the zip is unpacked.
    let mut env: Vec<(String, String)> = config["Environment"]["Variables"]
        .as_object()
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| {
                    let v = v.as_str().unwrap_or_default();
                    let v = match v.strip_prefix("/var/task/") {
                        Some(rest) => task.join(rest).to_string_lossy().into_owned(),
                        None => v.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    env.extend(shared.aws_env.iter().cloned());
    let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let payload = shared.next_payload.lock().unwrap().take().unwrap_or(sent);
    let handler = config["Handler"].as_str().unwrap_or_default().to_string();
    let timeout = Duration::from_secs(config["Timeout"].as_u64().unwrap_or(3));
    let api = RuntimeApi::start().await;
    let function = Function::start(task.join("bootstrap").to_str().unwrap(), &api, &handler, &env);
    let outcome = api.invoke(payload.clone(), timeout).await;
    let logs = function.stop().await;
    shared.invocations.lock().unwrap().push(Invocation {
        function: name.to_string(),
        payload,
        outcome: outcome.clone(),
        logs,
    });
    let version = ("x-amz-executed-version", "$LATEST".to_string());
    match outcome {
        Outcome::Response(v) => respond(StatusCode::OK, &[version], serde_json::to_vec(&v).unwrap()),
        Outcome::Error { error_type, error_message } | Outcome::InitError { error_type, error_message } => {
            let body = json!({"errorType": error_type, "errorMessage": error_message});
            let error = ("x-amz-function-error", "Unhandled".to_string());
            respond(StatusCode::OK, &[version, error], serde_json::to_vec(&body).unwrap())
        }
    }
}
