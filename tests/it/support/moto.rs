//! moto's AWS API server (Secrets Manager, RDS) on 127.0.0.1, reached by the real AWS SDK.

use std::{process::Command, sync::OnceLock, time::Duration};

static MOTO: OnceLock<String> = OnceLock::new();

/// The endpoint URL of the shared moto server, started on first use and stopped with the tests.
pub fn endpoint() -> &'static str {
    MOTO.get_or_init(|| {
        let exe = std::env::var("MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| super::pg::root().join(".venv/bin/moto_server"));
        assert!(exe.is_file(), "moto_server not found at {}: run `make test`, which installs it into .venv", exe.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("scanner-migrator-moto-{}.log", std::process::id()));
        // The watchdog ends moto when this test process ends, however it ends.
        let script = format!(
            "'{exe}' -H 127.0.0.1 -p {port} >'{log}' 2>&1 & m=$!; while kill -0 {pid} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null; rm -f '{log}'",
            exe = exe.display(),
            log = log.display(),
            pid = std::process::id()
        );
        // Not waited for on purpose: the watchdog outlives this process to clean up after it.
        #[allow(clippy::zombie_processes)]
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return url;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not start on port {port}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    })
}

/// SDK configuration pointed at moto with dummy credentials.
pub async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// The environment a function needs to reach moto.
pub fn aws_env() -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Creates a secret with this JSON text; returns its ARN.
pub async fn create_secret(name: &str, text: &str) -> String {
    let client = aws_sdk_secretsmanager::Client::new(&sdk().await);
    let out = client.create_secret().name(name).secret_string(text).send().await.unwrap();
    out.arn().unwrap().to_string()
}

/// Replaces the secret's value (what rotation does).
pub async fn put_secret(arn: &str, text: &str) {
    let client = aws_sdk_secretsmanager::Client::new(&sdk().await);
    client.put_secret_value().secret_id(arn).secret_string(text).send().await.unwrap();
}

/// Creates an RDS instance in moto (its endpoint address is not resolvable; its port is what we say).
pub async fn create_db_instance(id: &str, port: Option<u16>, db_name: Option<&str>) {
    let rds = aws_sdk_rds::Client::new(&sdk().await);
    rds.create_db_instance()
        .db_instance_identifier(id)
        .db_instance_class("db.t4g.micro")
        .engine("postgres")
        .master_username("ignored")
        .master_user_password("ignored-pw")
        .allocated_storage(20)
        .set_port(port.map(i32::from))
        .set_db_name(db_name.map(str::to_string))
        .send()
        .await
        .unwrap();
}
