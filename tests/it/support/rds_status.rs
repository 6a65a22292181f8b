//! A pass-through HTTP proxy in front of moto that can show RDS snapshots in a state moto never
//! reaches (its snapshots are `available` the moment they are created): `creating` (a snapshot
//! slower than the invocation), `failed`, `incompatible-restore`. Everything else is moto's own
//! answer, unchanged; only the `<Status>` of DescribeDBSnapshots / DescribeDBClusterSnapshots
//! answers is rewritten while a status is set.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{Request, Response, StatusCode},
};
use http_body_util::BodyExt;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

type Shown = Arc<Mutex<Option<String>>>;

/// The proxy on 127.0.0.1, a free port.
pub struct RdsStatus {
    /// The endpoint to give the function (`AWS_ENDPOINT_URL`).
    pub url: String,
    shown: Shown,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RdsStatus {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RdsStatus {
    /// Starts the proxy in front of the shared moto server.
    pub async fn start() -> Self {
        let shown: Shown = Arc::default();
        let upstream = super::moto::endpoint().to_string();
        let state = (
            shown.clone(),
            upstream,
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http::<Body>(),
        );
        let app = Router::new().fallback(forward).with_state(Arc::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RdsStatus { url, shown, server }
    }

    /// Every snapshot now shows this status; `None`: moto's own.
    pub fn show(&self, status: Option<&str>) {
        *self.shown.lock().unwrap() = status.map(str::to_string);
    }
}

type Upstream = (Shown, String, Client<hyper_util::client::legacy::connect::HttpConnector, Body>);

async fn forward(State(state): State<Arc<Upstream>>, req: Request<Body>) -> Response<Body> {
    let (shown, upstream, client) = state.as_ref();
    let (parts, body) = req.into_parts();
    let body: Bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let describes_snapshots = {
        let text = String::from_utf8_lossy(&body);
        text.contains("Action=DescribeDBSnapshots") || text.contains("Action=DescribeDBClusterSnapshots")
    };
    let uri = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in parts.headers.iter().filter(|(k, _)| *k != "host") {
        out = out.header(k, v);
    }
    let answer = match client.request(out.body(Body::from(body)).unwrap()).await {
        Ok(a) => a,
        Err(e) => return Response::builder().status(StatusCode::BAD_GATEWAY).body(Body::from(e.to_string())).unwrap(),
    };
    let (mut parts, body) = answer.into_parts();

    let mut body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if let (true, Some(status)) = (describes_snapshots, shown.lock().unwrap().clone()) {
        let text =
            String::from_utf8_lossy(&body).replace("<Status>available</Status>", &format!("<Status>{status}</Status>"));
        body = Bytes::from(text);
        parts.headers.remove("content-length");
    }
    Response::from_parts(parts, Body::from(body))
}
