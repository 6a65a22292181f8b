//! The Terraform module run for real: `terraform test` plans the complete example with a mocked provider,
//! and `terraform apply` / `destroy` run the module against moto's AWS API server, with the real binary
//! answering Lambda's Invoke (support/lambda_standin.rs), migrating the tests' real PostgreSQL.
//!
//! Resources moto cannot serve: none. Every resource of the module is created (asserted below), but for the
//! ones the inputs switch off, listed in `SWITCHED_OFF` with the input that does. Lambda's Invoke is the one
//! call moto cannot answer without Docker: the stand-in answers it. moto quirks met, and where handled:
//!   - Lambda LoggingConfig is not kept by moto: the stand-in remembers the one sent (lambda_standin.rs);
//!   - security-group rules that reference a group come back as "ACCOUNT/sg-..." when the provider does not
//!     know the account: the provider is left to ask STS for it (no skip_requesting_account_id);
//!   - moto drops the description of a rule that references a group when it creates it: noted, and the
//!     test checks that the second apply changes exactly those descriptions and nothing else.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::{
    lambda_standin::LambdaStandIn,
    moto,
    pg::{self, TestDb},
    terraform::{Workspace, plugin_dir, text},
};

const PROVIDER: &str = r#"
variable "moto" { type = string }
variable "lambda_endpoint" { type = string }

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    cloudwatch     = var.moto
    ec2            = var.moto
    iam            = var.moto
    kms            = var.moto
    lambda         = var.lambda_endpoint
    logs           = var.moto
    rds            = var.moto
    scheduler      = var.moto
    secretsmanager = var.moto
    sqs            = var.moto
    sts            = var.moto
  }
}
"#;

/// What a user's existing stack holds before they add the module: a VPC, subnets, the database's group.
const NETWORK: &str = r#"
resource "aws_vpc" "this" {
  cidr_block = "10.42.0.0/16"
}

resource "aws_subnet" "this" {
  count             = 2
  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet("10.42.0.0/16", 8, count.index)
  availability_zone = ["us-east-1a", "us-east-1b"][count.index]
}

resource "aws_security_group" "db" {
  name   = "scanner-db"
  vpc_id = aws_vpc.this.id
}

output "vpc_id" { value = aws_vpc.this.id }
output "subnet_ids" { value = aws_subnet.this[*].id }
output "db_security_group_id" { value = aws_security_group.db.id }
"#;

/// The module as a user adds it. The database (an RDS instance record in moto) is looked up at plan time
/// for its security group; its secret is given (moto's RDS does not manage one).
const ROOT: &str = r#"
variable "vpc_id" { type = string }
variable "subnet_ids" { type = list(string) }
variable "db_secret_arn" { type = string }
variable "db_port" { type = number }
variable "db_name" { type = string }
variable "lambda_zip_path" { type = string }
variable "migrations_dir" { type = string }
variable "index_build_rows_per_s" {
  type    = number
  default = 250000
}

resource "aws_kms_key" "dlq" {
  description = "the refresh dead-letter queue's key"
}

module "scanner_migrator" {
  source = "../terraform"

  name_prefix            = "tfit"
  vpc_id                 = var.vpc_id
  subnet_ids             = var.subnet_ids
  db_instance_identifier = "scanner"
  db_secret_arn          = var.db_secret_arn
  db_port                = var.db_port
  db_name                = var.db_name
  lambda_zip_path        = var.lambda_zip_path
  migrations_dir         = var.migrations_dir
  index_build_rows_per_s = var.index_build_rows_per_s
  create_vpc_endpoints   = true
  dlq_kms_key_arn        = aws_kms_key.dlq.arn
  alarm_sns_topic_arn    = "arn:aws:sns:us-east-1:123456789012:ops"
  # moto's RDS has no IAM database authentication to speak of: the refresh login gets its own secret.
  refresh_db_auth = "password"
}

output "migration_result" { value = module.scanner_migrator.migration_result }
output "refresh_login" { value = module.scanner_migrator.refresh_login }
output "dashboard_url" { value = module.scanner_migrator.dashboard_url }
"#;

/// Module resources the inputs above switch off, with the input that does.
const SWITCHED_OFF: &[(&str, &str)] = &[
    (
        "aws_vpc_security_group_egress_rule.lambda_to_vpc_https",
        "create_vpc_endpoints = true: the module's own endpoints",
    ),
    ("aws_vpc_security_group_egress_rule.lambda_to_internet_https", "allow_https_to_internet = false"),
];

/// `resource "TYPE" "NAME"` of every .tf file of the module.
fn module_resources() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(pg::root().join("terraform")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tf") {
            let body = hcl::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for block in body.blocks().filter(|b| b.identifier() == "resource") {
                out.insert(format!("{}.{}", block.labels()[0].as_str(), block.labels()[1].as_str()));
            }
        }
    }
    out
}

/// The zip `make build` would write: one file, the host build of the binary as `bootstrap` (the RDS CA
/// bundle is built into it).
pub(crate) fn build_zip(path: &std::path::Path) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\nz.write(sys.argv[2], 'bootstrap')\nz.close()",
        ])
        .arg(path)
        .arg(env!("CARGO_BIN_EXE_scanner-migrator"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

struct Stack {
    ws: Workspace,
    standin: LambdaStandIn,
    vars: Value,
}

impl Stack {
    fn set(&mut self, key: &str, value: Value) {
        self.vars[key] = value;
        std::fs::write(self.ws.path("root/terraform.tfvars.json"), self.vars.to_string()).unwrap();
    }

    async fn run(&self, args: &[&str]) -> (bool, String) {
        let started = std::time::Instant::now();
        let out = self.ws.terraform("root", args).await;
        eprintln!("tf_apply: terraform {} took {:?}", args[0], started.elapsed());
        let all = text(&out);
        crate::support::secrets::assert_absent(&format!("terraform {args:?}"), &all);
        (out.status.success(), all)
    }

    async fn apply(&self) -> (bool, String) {
        self.run(&["apply", "-auto-approve", "-no-color"]).await
    }

    async fn state(&self) -> Vec<String> {
        let (ok, out) = self.run(&["state", "list"]).await;
        assert!(ok, "{out}");
        out.lines().filter(|l| l.contains('.')).map(str::to_string).collect()
    }

    /// The actions (`tf.action`) of the invocations since `since`.
    fn actions_since(&self, since: usize) -> Vec<String> {
        self.standin.invocations()[since..]
            .iter()
            .map(|i| {
                assert_eq!(i.function, "tfit-migrate", "only migrate is invoked by Terraform");
                i.payload["tf"]["action"].as_str().unwrap_or("none").to_string()
            })
            .collect()
    }
}

async fn history_rows(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM scanner_migrator_history").await
}

async fn has_job_progress(db: &TestDb) -> bool {
    db.scalar::<Option<String>>("SELECT to_regclass('public.job_progress')::text").await.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_apply_migrates_reinvokes_on_change_fails_with_the_migrators_error_and_destroy_keeps_the_schema() {
    let Some(plugins) = plugin_dir() else { return };
    let server = pg::server();
    let ws = Workspace::new(plugins);
    let migrations = ws.path("migrations");
    let zip = ws.path("bootstrap.zip");
    build_zip(&zip);

    // The user's existing network, then their database and its secret.
    for (dir, main) in [("network", NETWORK), ("root", ROOT)] {
        std::fs::create_dir_all(ws.path(dir)).unwrap();
        std::fs::write(ws.path(dir).join("main.tf"), main).unwrap();
        std::fs::write(ws.path(dir).join("provider.tf"), PROVIDER).unwrap();
    }
    // What AWS provides around the function: its API endpoints, and, standing in for the RDS CA that signs
    // RDS's certificates (built into the binary), the CA of the local PostgreSQL's certificate.
    let mut around = moto::aws_env();
    around.push(("DB_CA_BUNDLE".into(), pg::server().ca.display().to_string()));
    let standin = LambdaStandIn::start(moto::endpoint(), &zip, around).await;
    let endpoints = json!({"moto": moto::endpoint(), "lambda_endpoint": standin.url});
    std::fs::write(ws.path("network/terraform.tfvars.json"), endpoints.to_string()).unwrap();
    ws.init("network").await;
    ws.init("root").await;
    let out = ws.terraform("network", &["apply", "-auto-approve", "-no-color"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = ws.terraform("network", &["output", "-json"]).await;
    let network: Value = serde_json::from_slice(&out.stdout).unwrap();
    let db_sg = network["db_security_group_id"]["value"].as_str().unwrap().to_string();

    let rds = aws_sdk_rds::Client::new(&moto::sdk().await);
    rds.create_db_instance()
        .db_instance_identifier("scanner")
        .db_instance_class("db.t4g.micro")
        .engine("postgres")
        .master_username("postgres")
        .master_user_password("not-the-real-one")
        .allocated_storage(20)
        .port(i32::from(server.port))
        .vpc_security_group_ids(&db_sg)
        .send()
        .await
        .unwrap();
    let db1 = TestDb::new().await;
    // The rotation shape: the host is the name the test certificate is for.
    // The RDS-shaped master's credentials, as in RDS's managed secret.
    let secret = json!({"engine": "postgres", "host": "localhost", "port": server.port, "username": server.master,
                        "password": server.master_password, "dbname": "postgres"});
    let secret_arn = moto::create_secret("tfit-db", &secret.to_string()).await;

    let mut stack = Stack { ws, standin, vars: endpoints };
    for (k, v) in [
        ("vpc_id", network["vpc_id"]["value"].clone()),
        ("subnet_ids", network["subnet_ids"]["value"].clone()),
        ("db_secret_arn", json!(secret_arn)),
        ("db_port", json!(server.port)),
        ("db_name", json!(db1.name)),
        ("lambda_zip_path", json!(zip)),
        ("migrations_dir", json!(migrations)),
    ] {
        stack.set(k, v);
    }

    // 1. The first apply creates everything and migrates.
    let (ok, out) = stack.apply().await;
    assert!(ok, "first apply failed:\n{out}\n{:#?}", stack.standin.invocations());
    let state = stack.state().await;
    let in_module: BTreeSet<String> = state
        .iter()
        .filter_map(|a| a.strip_prefix("module.scanner_migrator."))
        .filter(|a| !a.starts_with("data."))
        .map(|a| a.split('[').next().unwrap().to_string())
        .collect();
    let off: BTreeSet<String> = SWITCHED_OFF.iter().map(|(r, _)| r.to_string()).collect();
    let expected: BTreeSet<String> = module_resources().difference(&off).cloned().collect();
    assert_eq!(in_module, expected, "the first apply creates every resource of the module");
    assert_eq!(stack.actions_since(0), ["create"]);
    let first = &stack.standin.invocations()[0];
    assert_eq!(first.outcome.ok()["status"], "applied", "{}", first.logs);
    let files = std::fs::read_dir(&migrations)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            name.ends_with(".sql") && !name.ends_with(".down.sql")
        })
        .count() as i64;
    assert_eq!(history_rows(&db1).await, files, "one history row per migration");
    assert!(has_job_progress(&db1).await, "job_progress exists after the apply");
    // The module's output shows the result.
    let out = stack.ws.terraform("root", &["output", "-json", "migration_result"]).await;
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(result["status"], "applied");
    assert_eq!(result["schema_version"], json!(crate::support::all_versions().last().unwrap()));
    assert_eq!(result["applied"].as_array().unwrap().len() as i64, files);

    // The dashboard, as the provider read it back from CloudWatch, draws the new failure metric; the output
    // links to it.
    let out = stack.ws.terraform("root", &["output", "-json", "dashboard_url"]).await;
    let url: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert!(url.as_str().unwrap().ends_with("?region=us-east-1#dashboards/dashboard/tfit"), "{url}");
    let dashboard = "module.scanner_migrator.aws_cloudwatch_dashboard.this[0]";
    let out = stack.ws.terraform("root", &["state", "show", "-no-color", dashboard]).await;
    let shown = text(&out);
    assert!(shown.contains("MigrateFailed") && shown.contains("tfit-refresh-errors"), "{shown}");

    // The refresh login has a secret of its own, with a generated password that Terraform never stored.
    let out = stack.ws.terraform("root", &["output", "-json", "refresh_login"]).await;
    let login: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let refresh_secret = login["secret_arn"].as_str().unwrap().to_string();
    assert_eq!((login["user"].as_str(), login["auth"].as_str()), (Some("scanner_refresh_tfit"), Some("password")));
    let secrets = aws_sdk_secretsmanager::Client::new(&moto::sdk().await);
    let stored = secrets.get_secret_value().secret_id(&refresh_secret).send().await.unwrap();
    let stored: Value = serde_json::from_str(stored.secret_string().unwrap()).unwrap();
    let password = stored["password"].as_str().unwrap().to_string();
    crate::support::secrets::register(&password);
    assert_eq!(stored["username"], "scanner_refresh_tfit", "the stack's own role: scanner_refresh_<name_prefix>");
    assert!(password.len() >= 32 && password.chars().all(|c| c.is_ascii_hexdigit()), "a generated password");
    let state = std::fs::read_to_string(stack.ws.path("root/terraform.tfstate")).unwrap();
    assert!(!state.contains(&password), "the refresh login's password is in the state");
    let migrate_env = &stack.standin.configuration("tfit-migrate").await["Environment"]["Variables"];
    let refresh_env = &stack.standin.configuration("tfit-refresh").await["Environment"]["Variables"];
    assert_eq!(migrate_env["REFRESH_SECRET_ARN"], json!(refresh_secret), "migrate sets the refresh password");
    assert_eq!(
        (&migrate_env["REFRESH_ROLE"], &migrate_env["REFRESH_DB_AUTH"]),
        (&json!("scanner_refresh_tfit"), &json!("password")),
        "migrate grants that role, out of rds_iam"
    );
    assert_eq!(migrate_env["DB_SECRET_ARN"], json!(secret_arn), "migrate logs in as the master user");
    assert_eq!(refresh_env["DB_SECRET_ARN"], json!(refresh_secret), "refresh never reads the master secret");

    // 2. Nothing changed: nothing invoked. The one drift is moto's: it drops the description of a rule that
    //    references a security group when creating it, so the second apply puts the descriptions back (and
    //    changes nothing else); after that there is nothing to change at all.
    let (ok, out) = stack.apply().await;
    assert!(ok, "{out}");
    let updated: BTreeSet<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# module.scanner_migrator.")?.strip_suffix(" will be updated in-place"))
        .collect();
    let moto_drops = BTreeSet::from([
        "aws_vpc_security_group_egress_rule.lambda_to_db",
        "aws_vpc_security_group_egress_rule.lambda_to_endpoints[0]",
        "aws_vpc_security_group_ingress_rule.db_from_lambda",
        "aws_vpc_security_group_ingress_rule.endpoints_from_lambda[0]",
    ]);
    assert!(updated.is_subset(&moto_drops), "drift beyond moto's dropped rule descriptions: {updated:?}\n{out}");
    let changes: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("+ ") || l.starts_with("- ") || l.starts_with("~ ") || l.starts_with("-/+ "))
        .filter(|l| !l.starts_with("~ resource ") && !l.starts_with("~ update in-place"))
        .collect();
    assert!(changes.iter().all(|c| c.starts_with("+ description")), "{changes:?}");
    assert_eq!(stack.standin.invocations().len(), 1, "a second apply with nothing changed invokes nothing");
    let (ok, out) = stack.apply().await;
    assert!(ok, "{out}");
    assert!(out.contains("Resources: 0 added, 0 changed, 0 destroyed"), "{out}");
    assert_eq!(stack.standin.invocations().len(), 1, "an apply with nothing changed invokes nothing");

    // 3. A changed migration file re-invokes: the invocation is replaced, delete (a no-op) then create.
    let file = migrations.join("002_optimize_for_scale.sql");
    let text_002 = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text_002}\n-- reviewed\n")).unwrap();
    let before = stack.standin.invocations().len();
    let (ok, out) = stack.apply().await;
    assert!(ok, "{out}");
    assert_eq!(stack.actions_since(before), ["delete", "create"]);
    let invocations = stack.standin.invocations();
    assert_eq!(invocations[before].outcome.ok()["status"], "noop");
    // The binary embeds the migrations: the same binary finds the database current.
    assert_eq!(invocations[before + 1].outcome.ok()["status"], "up_to_date");

    // 4. A migration that fails fails the apply with the migrator's errorType and message, and leaves no
    //    invocation in state. (Another database, where a table the first migration expects is in the way.)
    let db2 = TestDb::new().await;
    db2.exec("CREATE TABLE jobs (id int)").await;
    stack.set("db_name", json!(db2.name));
    let before = stack.standin.invocations().len();
    let (ok, out) = stack.apply().await;
    assert!(!ok, "the apply succeeded over a failing migration:\n{out}");
    assert_eq!(stack.actions_since(before), ["delete", "create"]);
    let (error_type, message) = stack.standin.invocations().last().unwrap().outcome.err();
    assert_eq!(error_type, "MigrationFailed");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("\"errorType\":\"MigrationFailed\""), "{out}");
    let first_words: String = message.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
    assert!(flat.contains(&first_words), "the apply does not show the migrator's message {message:?}:\n{out}");
    assert!(!stack.state().await.iter().any(|a| a.contains("aws_lambda_invocation")), "a failed migrate left state");

    // 5. The next apply invokes again. Here the function answers with a result that is not a finished
    //    migration (a plan, not a migrate): the postcondition fails the apply, and the invocation is left
    //    tainted, so the plan after it replaces it instead of failing on the same postcondition forever.
    db2.exec("DROP TABLE jobs").await;
    stack.standin.replace_next_payload(json!({"command": "plan"}));
    let before = stack.standin.invocations().len();
    let (ok, out) = stack.apply().await;
    assert!(!ok, "a plan result passed as a migration:\n{out}");
    assert_eq!(stack.actions_since(before), ["none"]);
    assert_eq!(stack.standin.invocations().last().unwrap().outcome.ok()["status"], "planned");
    assert!(out.contains("The migrate function did not finish the migration"), "{out}");
    let (ok, plan) = stack.run(&["plan", "-no-color"]).await;
    assert!(ok, "the plan after a rejected result fails:\n{plan}");
    assert!(plan.contains("aws_lambda_invocation.migrate is tainted, so must be replaced"), "{plan}");
    assert_eq!(history_rows(&db2).await, 0, "a plan changes nothing");

    // 6. ... and the apply after that migrates.
    let before = stack.standin.invocations().len();
    let (ok, out) = stack.apply().await;
    assert!(ok, "{out}");
    assert_eq!(stack.actions_since(before), ["delete", "create"]);
    assert_eq!(stack.standin.invocations().last().unwrap().outcome.ok()["status"], "applied");
    assert_eq!(history_rows(&db2).await, files);

    // 7. A build longer than the invocation (issue 17): the function starts it detached and answers
    //    in_progress; the apply fails with the migrator's words (what runs, that it continues by itself, that the
    //    next apply waits for it) and leaves the invocation tainted; once the build is done, the next apply
    //    finishes the migration and passes. (Another database, 001 applied, its build held back by a reader.)
    let db3 = TestDb::new().await;
    let run = crate::support::cli::migrator(&db3.url, &["migrate", "--target", "1"]).await;
    assert_eq!(run.code, 0, "{:#}", run.json);
    db3.exec(
        "INSERT INTO jobs (bucket) VALUES ('b');
         INSERT INTO job_objects (job_id, bucket, key) SELECT job_id, 'b', 'k' || g FROM jobs, generate_series(1, 5000) g;
         ANALYZE job_objects;",
    )
    .await;
    let mut reader = db3.conn().await;
    sqlx::Executor::execute(&mut reader, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobs;")
        .await
        .unwrap();
    stack.set("db_name", json!(db3.name));
    stack.set("index_build_rows_per_s", json!(1));
    let before = stack.standin.invocations().len();
    let (ok, out) = stack.apply().await;
    assert!(!ok, "an in_progress result passed as a migration:\n{out}");
    assert_eq!(stack.actions_since(before), ["delete", "create"]);
    let answer = stack.standin.invocations().last().unwrap().outcome.ok().clone();
    assert_eq!(answer["status"], "in_progress", "{answer:#}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for words in [
        "outlasts its invocation",
        "builds index idx_job_objects_job_status",
        "continues without anyone",
        "Run terraform apply again: it waits for the build",
    ] {
        assert!(flat.contains(words), "the apply does not say {words:?}:\n{out}");
    }
    let (ok, plan) = stack.run(&["plan", "-no-color"]).await;
    assert!(ok && plan.contains("aws_lambda_invocation.migrate is tainted, so must be replaced"), "{plan}");
    sqlx::Executor::execute(&mut reader, "COMMIT").await.unwrap();
    let started = std::time::Instant::now();
    while db3
        .scalar::<i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'scanner-migrator detached %'",
        )
        .await
        > 0
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the detached build did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Back to the real speed: 002's second index fits the invocation.
    stack.set("index_build_rows_per_s", json!(250000));
    let before = stack.standin.invocations().len();
    let (ok, out) = stack.apply().await;
    assert!(ok, "{out}");
    assert_eq!(stack.actions_since(before), ["delete", "create"]);
    assert_eq!(stack.standin.invocations().last().unwrap().outcome.ok()["status"], "applied");
    assert_eq!(history_rows(&db3).await, files);

    // 8. terraform destroy sends delete, which leaves the schema as it is.
    let before = stack.standin.invocations().len();
    let (ok, out) = stack.run(&["destroy", "-auto-approve", "-no-color"]).await;
    assert!(ok, "{out}");
    assert_eq!(stack.actions_since(before), ["delete"]);
    assert_eq!(stack.standin.invocations().last().unwrap().outcome.ok()["status"], "noop");
    assert_eq!(history_rows(&db2).await, files, "destroy keeps the history");
    assert!(has_job_progress(&db2).await, "destroy keeps the schema");
    assert!(stack.state().await.is_empty(), "destroy leaves nothing in state");
}

#[tokio::test]
async fn terraform_test_plans_the_complete_example_with_a_mocked_provider() {
    let Some(plugins) = plugin_dir() else { return };
    let ws = Workspace::new(plugins);
    let zip = ws.path("bootstrap.zip");
    std::fs::write(&zip, b"not run: the provider is mocked").unwrap();
    ws.init("terraform/examples/complete").await;
    let var = format!("lambda_zip_path={}", zip.display());
    let out = ws.terraform("terraform/examples/complete", &["test", "-no-color", "-var", &var]).await;
    let all = text(&out);
    assert!(out.status.success(), "terraform test failed:\n{all}");
    // Every run block ran and passed (none skipped).
    let runs = std::fs::read_to_string(pg::root().join("terraform/examples/complete/tests/plan.tftest.hcl"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("run \""))
        .count();
    assert!(runs >= 5, "{runs} runs");
    assert!(all.contains(&format!("Success! {runs} passed, 0 failed")), "{all}");
}
