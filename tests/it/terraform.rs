//! The Terraform module checked against the binary it deploys, offline: these tests parse the HCL and hold
//! it to what the code reads, dispatches on, accepts and calls. (`terraform validate` against the real
//! provider runs in scripts/tf-check.sh; the plan and a real apply in tf_apply.rs.)

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use hcl::{
    Block, Body, Expression, ObjectKey, TemplateExpr, TraversalOperator,
    eval::{Context, Evaluate},
};
use scanner_migrator::{
    config::{ENV_VARS, Settings},
    credentials::AWS_ACTIONS,
    handlers::{HANDLER_NAMES, MigrateRequest, parse_migrate_event, parse_refresh_event},
    metrics::{self, EMITTED},
    runner::Command,
};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.tf` file of one directory (a module), parsed.
struct Module {
    dir: PathBuf,
    files: Vec<(String, Body)>,
}

impl Module {
    fn load(dir: &Path) -> Module {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "tf") {
                let text = std::fs::read_to_string(&path).unwrap();
                let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                files.push((path.file_name().unwrap().to_string_lossy().into_owned(), body));
            }
        }
        assert!(!files.is_empty(), "no .tf files in {}", dir.display());
        Module { dir: dir.to_path_buf(), files }
    }

    /// The blocks `kind "labels[0]" "labels[1]"`, in any file.
    fn blocks(&self, kind: &str, labels: &[&str]) -> Vec<&Block> {
        self.files
            .iter()
            .flat_map(|(_, body)| body.blocks())
            .filter(|b| b.identifier() == kind)
            .filter(|b| labels.iter().zip(b.labels()).all(|(want, got)| *want == got.as_str()))
            .filter(|b| b.labels().len() >= labels.len())
            .collect()
    }

    fn block(&self, kind: &str, labels: &[&str]) -> &Block {
        match self.blocks(kind, labels).as_slice() {
            [one] => one,
            other => panic!("expected one `{kind} {labels:?}` in {}, found {}", self.dir.display(), other.len()),
        }
    }

    fn local(&self, name: &str) -> &Expression {
        self.blocks("locals", &[])
            .into_iter()
            .find_map(|b| attr(b.body(), name))
            .unwrap_or_else(|| panic!("no local.{name}"))
    }

    /// A variable's default (null when it has none).
    fn default(&self, name: &str) -> &Expression {
        static NULL: Expression = Expression::Null;
        attr(self.block("variable", &[name]).body(), "default").unwrap_or(&NULL)
    }
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn nested<'a>(body: &'a Body, kind: &str) -> &'a Body {
    body.blocks().find(|b| b.identifier() == kind).unwrap_or_else(|| panic!("no `{kind}` block")).body()
}

fn string(expr: &Expression) -> String {
    match expr {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => match t.as_ref() {
            TemplateExpr::QuotedString(s) => s.clone(),
            TemplateExpr::Heredoc(h) => h.template.clone(),
        },
        other => panic!("expected a string, found {other:?}"),
    }
}

fn key(k: &ObjectKey) -> String {
    match k {
        ObjectKey::Identifier(id) => id.to_string(),
        ObjectKey::Expression(e) => string(e),
        other => panic!("unexpected object key {other:?}"),
    }
}

fn text(expr: &Expression) -> String {
    hcl::format::to_string(expr).unwrap()
}

/// `a.b.c` for a traversal of plain attribute accesses.
fn path(expr: &Expression) -> Option<String> {
    let Expression::Traversal(t) = expr else { return None };
    let Expression::Variable(root) = &t.expr else { return None };
    let mut out = root.to_string();
    for op in &t.operators {
        match op {
            TraversalOperator::GetAttr(name) => out += &format!(".{name}"),
            _ => return None,
        }
    }
    Some(out)
}

/// The argument of `jsonencode(...)`, evaluated (it must be a literal) into JSON.
fn jsonencoded(expr: &Expression) -> Value {
    let Expression::FuncCall(call) = expr else { panic!("expected jsonencode(...), found {}", text(expr)) };
    assert_eq!(call.name.name.as_str(), "jsonencode");
    let value = call.args[0].evaluate(&Context::new()).unwrap_or_else(|e| panic!("{}: {e}", text(expr)));
    serde_json::to_value(value).unwrap()
}

/// One environment variable a function sets.
struct EnvEntry {
    /// Set on every branch of every conditional.
    always: bool,
    /// Its value, when set always and determined by literals, variables with defaults, or `tostring()` of
    /// those (`sample` stands in for required variables and looked-up locals, by path).
    value: Option<String>,
}

/// The environment an expression sets, through merge(), locals and conditionals.
fn environment(module: &Module, expr: &Expression, sample: &BTreeMap<&str, &str>) -> BTreeMap<String, EnvEntry> {
    fn value(module: &Module, e: &Expression, sample: &BTreeMap<&str, &str>) -> Option<String> {
        match e {
            Expression::String(s) => Some(s.clone()),
            Expression::Number(n) => Some(n.to_string()),
            Expression::Bool(b) => Some(b.to_string()),
            Expression::TemplateExpr(_) => Some(string(e)).filter(|s| !s.contains("${")),
            Expression::FuncCall(call) if call.name.name.as_str() == "tostring" => value(module, &call.args[0], sample),
            other => {
                let path = path(other)?;
                if let Some(s) = sample.get(path.as_str()) {
                    return Some(s.to_string());
                }
                value(module, module.default(path.strip_prefix("var.")?), sample)
            }
        }
    }
    match expr {
        Expression::Object(obj) => {
            obj.iter().map(|(k, v)| (key(k), EnvEntry { always: true, value: value(module, v, sample) })).collect()
        }
        Expression::FuncCall(call) if call.name.name.as_str() == "merge" => {
            let mut out = BTreeMap::new();
            for arg in &call.args {
                for (k, entry) in environment(module, arg, sample) {
                    // A later unconditional setting wins; a conditional one does not undo an earlier one.
                    if entry.always || !out.contains_key(&k) {
                        out.insert(k, entry);
                    }
                }
            }
            out
        }
        // A condition `sample` decides ("true"/"false"): that branch only.
        Expression::Conditional(c) if sample.contains_key(text(&c.cond_expr).as_str()) => {
            let branch = if sample[text(&c.cond_expr).as_str()] == "true" { &c.true_expr } else { &c.false_expr };
            environment(module, branch, sample)
        }
        Expression::Conditional(c) => {
            let (t, f) = (environment(module, &c.true_expr, sample), environment(module, &c.false_expr, sample));
            let on_both = |k: &String| t.get(k).is_some_and(|e| e.always) && f.get(k).is_some_and(|e| e.always);
            let keys: BTreeSet<String> = t.keys().chain(f.keys()).cloned().collect();
            // Which branch applies depends on the inputs: no value is certain.
            keys.into_iter().map(|k| (k.clone(), EnvEntry { always: on_both(&k), value: None })).collect()
        }
        Expression::Parenthesis(inner) => environment(module, inner, sample),
        other => match path(other).as_deref().and_then(|p| p.strip_prefix("local.")) {
            Some(local) => environment(module, module.local(local), sample),
            None => panic!("cannot follow the environment expression {}", text(other)),
        },
    }
}

/// Every string in `actions = [...]` of a policy document's statements (static and dynamic), through
/// conditionals (both branches), and of the documents it sources.
fn policy_actions(module: &Module, document: &str) -> BTreeSet<String> {
    fn strings(e: &Expression, out: &mut BTreeSet<String>) {
        match e {
            Expression::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Expression::Conditional(c) => {
                strings(&c.true_expr, out);
                strings(&c.false_expr, out);
            }
            Expression::Parenthesis(inner) => strings(inner, out),
            other => {
                out.insert(string(other));
            }
        }
    }
    fn statements(body: &Body, out: &mut BTreeSet<String>) {
        for block in body.blocks() {
            match block.identifier() {
                "statement" | "content" => {
                    if let Some(actions) = attr(block.body(), "actions") {
                        strings(actions, out);
                    }
                }
                "dynamic" => statements(block.body(), out),
                _ => {}
            }
        }
    }
    let doc = module.block("data", &["aws_iam_policy_document", document]);
    let mut out = BTreeSet::new();
    statements(doc.body(), &mut out);
    if let Some(Expression::Array(sources)) = attr(doc.body(), "source_policy_documents") {
        for source in sources {
            let p = path(source).unwrap_or_else(|| panic!("source document {}", text(source)));
            let name = p.strip_prefix("data.aws_iam_policy_document.").and_then(|n| n.strip_suffix(".json")).unwrap();
            out.extend(policy_actions(module, name));
        }
    }
    out
}

fn module() -> Module {
    Module::load(&repo().join("terraform"))
}

fn functions(module: &Module) -> Vec<&Block> {
    let functions = module.blocks("resource", &["aws_lambda_function"]);
    assert_eq!(functions.len(), 2, "one function per handler");
    functions
}

#[test]
fn handler_names_are_the_ones_the_binary_dispatches_on() {
    let module = module();
    let handlers: BTreeSet<String> =
        functions(&module).iter().map(|f| string(attr(f.body(), "handler").unwrap())).collect();
    assert_eq!(handlers, HANDLER_NAMES.iter().map(|h| h.to_string()).collect());
    for f in functions(&module) {
        let body = f.body();
        assert_eq!(string(attr(body, "runtime").unwrap()), "provided.al2023");
        assert_eq!(text(attr(body, "architectures").unwrap()), text(&hcl::expression!(["arm64"])));
        assert_eq!(path(attr(body, "filename").unwrap()).as_deref(), Some("var.lambda_zip_path"));
        assert_eq!(string(attr(nested(body, "tracing_config"), "mode").unwrap()), "Active");
    }
}

#[test]
fn environment_holds_only_variables_the_binary_reads_and_every_required_one() {
    let module = module();
    let known: BTreeSet<&str> = ENV_VARS.iter().map(|v| v.name).collect();
    let required: BTreeSet<String> =
        ENV_VARS.iter().filter(|v| v.required_in_lambda).map(|v| v.name.to_string()).collect();
    for f in functions(&module) {
        let name = f.labels()[1].as_str();
        let variables = attr(nested(f.body(), "environment"), "variables");
        let variables = variables.unwrap_or_else(|| panic!("{name}: no environment variables"));
        // Every branch at once: what may be set, what is always set.
        let sample = BTreeMap::from([
            ("local.db_secret_arn", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:scanner-db-AbCdEf"),
            ("var.db_instance_identifier", "scanner"),
        ]);
        let env = environment(&module, variables, &sample);
        let unknown: Vec<_> = env.keys().filter(|k| !known.contains(k.as_str())).collect();
        assert!(unknown.is_empty(), "{name} sets variables the binary never reads: {unknown:?}");
        let always: BTreeSet<String> = env.iter().filter(|(_, e)| e.always).map(|(k, _)| k.clone()).collect();
        let missing: Vec<_> = required.difference(&always).collect();
        assert!(missing.is_empty(), "{name} does not always set required variables {missing:?}");
        for secretish in ["DATABASE_URL", "PASSWORD", "DB_PASSWORD"] {
            assert!(!env.contains_key(secretish), "{name} puts {secretish} in the environment");
        }
        // Each refresh login, one at a time: the values Terraform sets are ones the binary accepts.
        for refresh_iam in ["true", "false"] {
            let mut sample = sample.clone();
            sample.insert("local.refresh_iam", refresh_iam);
            sample.insert("local.refresh_db_user", "scanner_refresh_scanner_prod");
            sample.insert("var.refresh_db_auth", if refresh_iam == "true" { "iam" } else { "password" });
            sample.insert("local.refresh_secret_arn", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:r-AbCdEf");
            let env = environment(&module, variables, &sample);
            let mut values: BTreeMap<String, String> =
                env.into_iter().filter_map(|(k, e)| Some((k, e.value?))).collect();
            assert!(values.contains_key("DB_SSLMODE") && values.contains_key("DB_PORT"), "{name}: {values:?}");
            if name == "refresh" {
                let secret = values.get("DB_SECRET_ARN").map(String::as_str);
                assert_ne!(secret, Some(sample["local.db_secret_arn"]), "refresh never logs in as the master user");
                assert_eq!(
                    values.get("DB_AUTH").map(String::as_str),
                    Some(if refresh_iam == "true" { "iam" } else { "password" })
                );
                assert_eq!(
                    refresh_iam == "true",
                    secret.is_none(),
                    "refresh reads a secret only without IAM: {values:?}"
                );
            }
            // As Lambda reads it (a TLS mode that does not verify the server is refused there).
            values.insert("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into());
            let settings = Settings::from_lookup(|k| values.get(k).cloned())
                .unwrap_or_else(|e| panic!("{name}: the binary refuses the environment {values:?}: {e}"));
            if name == "migrate" {
                // Migrate grants the very role the refresh function logs in as, for the way it logs in.
                assert_eq!(settings.refresh_role, sample["local.refresh_db_user"], "{values:?}");
                let iam = settings.refresh_auth == scanner_migrator::config::Auth::Iam;
                assert_eq!(iam, refresh_iam == "true", "{values:?}");
            }
        }
    }
}

#[test]
fn the_ca_bundle_is_built_in_not_beside_bootstrap() {
    // The binary carries the RDS bundle (src/config.rs RDS_CA_BUNDLE); a DB_CA_BUNDLE naming a file
    // the zip does not hold would fail every start.
    let module = module();
    let env = environment(&module, module.local("common_environment"), &BTreeMap::new());
    assert!(!env.contains_key("DB_CA_BUNDLE"), "the zip holds no CA file for DB_CA_BUNDLE to name");
}

#[test]
fn migrate_invocation_input_is_accepted_in_every_lifecycle_action() {
    let module = module();
    let invocation = module.block("resource", &["aws_lambda_invocation", "migrate"]).body();
    assert_eq!(string(attr(invocation, "lifecycle_scope").unwrap()), "CRUD");
    let key = string(attr(invocation, "terraform_key").unwrap());
    assert_eq!(
        path(attr(invocation, "function_name").unwrap()).as_deref(),
        Some("aws_lambda_function.migrate.function_name")
    );
    let input = jsonencoded(attr(invocation, "input").unwrap());
    // What the provider sends: the input plus {key: {action, prev_input}}.
    for (action, expected) in [
        ("create", MigrateRequest::Run(Command::Migrate { target: None })),
        ("update", MigrateRequest::Run(Command::Migrate { target: None })),
        ("delete", MigrateRequest::TerraformDelete),
    ] {
        let mut event = input.clone();
        let prev = if action == "create" { Value::Null } else { input.clone() };
        event[key.as_str()] = json!({"action": action, "prev_input": prev});
        let parsed = parse_migrate_event(&event).unwrap_or_else(|e| panic!("{action}: {event} refused: {e}"));
        assert_eq!(parsed, expected, "{action}");
    }
    // Re-run when the code or the migrations change.
    let triggers = text(attr(invocation, "triggers").unwrap());
    assert!(triggers.contains("local.code_hash") && triggers.contains("local.migrations_hash"), "{triggers}");
    let hash = text(module.local("migrations_hash"));
    assert!(hash.contains("fileset") && hash.contains("*.sql") && hash.contains("filesha256"), "{hash}");
    // ... only once the database and the endpoints can be reached.
    let depends = text(attr(invocation, "depends_on").unwrap());
    for needed in ["db_from_lambda", "lambda_to_db", "lambda_to_endpoints", "aws_vpc_endpoint.this"] {
        assert!(depends.contains(needed), "the invocation does not wait for {needed}: {depends}");
    }
    // The postcondition, and the provisioner that taints the invocation when it fails (so the next apply
    // invokes again instead of every plan failing), accept exactly the statuses a finished migrate reports.
    let finished: Vec<String> = match module.local("migrate_finished_statuses") {
        Expression::Array(items) => items.iter().map(string).collect(),
        other => panic!("migrate_finished_statuses: {}", text(other)),
    };
    assert_eq!(finished, ["applied", "up_to_date"]);
    let lifecycle = nested(invocation, "lifecycle");
    let condition = text(attr(nested(lifecycle, "postcondition"), "condition").unwrap());
    let provisioner = invocation.blocks().find(|b| b.identifier() == "provisioner").expect("the tainting provisioner");
    assert_eq!(provisioner.labels()[0].as_str(), "local-exec");
    assert!(attr(provisioner.body(), "when").is_none(), "a creation-time provisioner: only those taint");
    let command = text(attr(provisioner.body(), "command").unwrap());
    for check in [&condition, &command] {
        assert!(check.contains("local.migrate_finished_statuses") && check.contains("self.result"), "{check}");
    }
    assert!(command.ends_with(r#"? "exit 0" : "exit 1""#), "{command}");
}

#[test]
fn schedule_input_is_accepted_by_the_refresh_handler_and_targets_it() {
    let module = module();
    let schedule = module.block("resource", &["aws_scheduler_schedule", "refresh"]).body();
    let target = nested(schedule, "target");
    assert_eq!(path(attr(target, "arn").unwrap()).as_deref(), Some("aws_lambda_function.refresh.arn"));
    let input = jsonencoded(attr(target, "input").unwrap());
    // The scheduler substitutes its context attributes before invoking.
    let delivered = json!({
        "scheduled_time": "2026-11-25T07:05:00Z",
        "execution_id": "d2c6a1b8-0000-4000-8000-000000000000",
        "attempt_number": "1",
    });
    assert_eq!(
        input.as_object().unwrap().keys().collect::<Vec<_>>(),
        delivered.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    for v in input.as_object().unwrap().values() {
        assert!(v.as_str().unwrap().starts_with("<aws.scheduler."), "{v} is not a scheduler context attribute");
    }
    let request = parse_refresh_event(&delivered).unwrap();
    assert_eq!(request.scheduled_time.as_deref(), Some("2026-11-25T07:05:00Z"));
    parse_refresh_event(&input).expect("the raw template is accepted too");
    // The scheduler retries delivery, then dead-letters; Lambda does not retry on top.
    assert!(target.blocks().any(|b| b.identifier() == "retry_policy"));
    assert!(target.blocks().any(|b| b.identifier() == "dead_letter_config"));
    // No refresh before the migration has created job_progress.
    let depends = text(attr(schedule, "depends_on").unwrap());
    assert!(depends.contains("aws_lambda_invocation.migrate"), "{depends}");
    let invoke_config = module.block("resource", &["aws_lambda_function_event_invoke_config", "refresh"]).body();
    assert_eq!(text(attr(invoke_config, "maximum_retry_attempts").unwrap()), "0");
}

#[test]
fn zip_path_is_what_make_build_writes() {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let built = makefile
        .lines()
        .find_map(|l| l.strip_prefix("LAMBDA_ZIP").map(|r| r.trim_start().trim_start_matches(":=").trim()))
        .expect("LAMBDA_ZIP in the Makefile");
    let built = repo().join(built);
    let example_dir = repo().join("terraform/examples/complete");
    let example = Module::load(&example_dir);
    let Expression::FuncCall(coalesce) = example.local("lambda_zip_path") else { panic!("coalesce(var, DEFAULT)") };
    let default = string(&coalesce.args[1]);
    let relative = default.strip_prefix("${path.root}/").expect("a default relative to the example");
    let tfvars = std::fs::read_to_string(example_dir.join("terraform.tfvars.example")).unwrap();
    let tfvars = hcl::parse(&tfvars).unwrap();
    let in_tfvars = string(attr(&tfvars, "lambda_zip_path").unwrap());
    for (what, p) in [("the example's default", relative.to_string()), ("terraform.tfvars.example", in_tfvars)] {
        assert_eq!(normalize(&example_dir.join(&p)), normalize(&built), "{what}: {p}");
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What Lambda itself needs besides what the code calls: network interfaces in the VPC, X-Ray, its log
/// group; the scheduler's invoke and dead-letter; kms:Decrypt for a secret under a customer key, which
/// GetSecretValue performs on the function's behalf.
const PLATFORM_ACTIONS: &[&str] = &[
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "kms:Decrypt",
];

#[test]
fn iam_allows_exactly_the_calls_the_code_makes() {
    let module = module();
    let code: BTreeSet<String> = AWS_ACTIONS.iter().map(|a| a.to_string()).collect();
    let platform: BTreeSet<String> = PLATFORM_ACTIONS.iter().map(|a| a.to_string()).collect();
    let migrate = policy_actions(&module, "migrate");
    let refresh = policy_actions(&module, "refresh");
    let granted: BTreeSet<String> = migrate.union(&refresh).cloned().collect();
    let missing: Vec<_> = code.difference(&granted).collect();
    assert!(missing.is_empty(), "the code calls {missing:?}, which no function may");
    let extra: Vec<_> = granted.difference(&code).filter(|a| !platform.contains(*a)).collect();
    assert!(extra.is_empty(), "granted but never called: {extra:?}");
    assert!(granted.iter().all(|a| !a.contains('*')), "wildcard action in {granted:?}");
    // Only migrate snapshots; refresh reads the secret and looks the endpoint up, nothing more.
    for snapshot in ["rds:CreateDBSnapshot", "rds:CreateDBClusterSnapshot", "rds:AddTagsToResource"] {
        assert!(migrate.contains(snapshot) && !refresh.contains(snapshot), "{snapshot}");
    }
    // Only migrate continues itself.
    for continuation in ["scheduler:CreateSchedule", "iam:PassRole"] {
        assert!(migrate.contains(continuation) && !refresh.contains(continuation), "{continuation}");
    }
    // The scheduler may invoke the refresh function on its schedule, and migrate to continue, nothing else.
    let scheduler = module.block("data", &["aws_iam_policy_document", "scheduler"]).body();
    let invoke = scheduler
        .blocks()
        .find(|s| attr(s.body(), "actions").map(text).is_some_and(|a| a.contains("lambda:InvokeFunction")))
        .expect("scheduler invoke statement");
    let Some(Expression::Array(resources)) = attr(invoke.body(), "resources") else { panic!("resources") };
    let resources: Vec<_> = resources.iter().map(path).collect();
    assert_eq!(resources, [Some("aws_lambda_function.refresh.arn".to_string())]);
    // ... and dead-letter, through the queue's key when it has a customer one.
    assert_eq!(
        policy_actions(&module, "scheduler"),
        ["kms:Decrypt", "kms:GenerateDataKey", "lambda:InvokeFunction", "sqs:SendMessage"].map(String::from).into()
    );
}

#[test]
fn nothing_is_reachable_from_outside() {
    let module = module();
    // The functions' security group has no ingress rule at all; the database admits the functions; the
    // endpoints admit the functions and, as private DNS sends every client in the VPC to them, the VPC
    // (its CIDR or the user's list), on 443 only.
    for rule in module.blocks("resource", &["aws_vpc_security_group_ingress_rule"]) {
        let body = rule.body();
        let target = text(attr(body, "security_group_id").unwrap());
        assert!(!target.contains("aws_security_group.lambda"), "ingress into the functions: {:?}", rule.labels());
        assert!(attr(body, "cidr_ipv6").is_none(), "{:?}", rule.labels());
        match attr(body, "cidr_ipv4") {
            None => assert_eq!(
                path(attr(body, "referenced_security_group_id").unwrap()).as_deref(),
                Some("aws_security_group.lambda.id"),
                "{:?}",
                rule.labels()
            ),
            Some(cidr) => {
                assert_eq!(target, "aws_security_group.endpoints[0].id", "{:?}", rule.labels());
                assert_eq!(text(cidr), "local.endpoint_allowed_cidrs[count.index]");
                assert_eq!(text(attr(body, "from_port").unwrap()), "443");
                assert_eq!(text(attr(body, "to_port").unwrap()), "443");
            }
        }
    }
    for endpoint in module.blocks("resource", &["aws_vpc_endpoint"]) {
        assert_eq!(text(attr(endpoint.body(), "private_dns_enabled").unwrap()), "true");
    }
    // No endpoint (and so no change to the VPC's DNS) unless asked for.
    assert_eq!(text(module.default("create_vpc_endpoints")), "false");
    let example = Module::load(&repo().join("terraform/examples/complete"));
    let db = example.block("resource", &["aws_db_instance", "this"]).body();
    assert_eq!(text(attr(db, "publicly_accessible").unwrap()), "false");
    assert_eq!(text(attr(db, "storage_encrypted").unwrap()), "true");
    assert_eq!(text(attr(db, "manage_master_user_password").unwrap()), "true");
    let params = example.block("resource", &["aws_db_parameter_group", "this"]).body();
    assert!(
        params.blocks().any(|p| attr(p.body(), "name").map(string).as_deref() == Some("rds.force_ssl")
            && attr(p.body(), "value").map(string).as_deref() == Some("1")),
        "rds.force_ssl=1"
    );
    assert!(example.blocks("resource", &["aws_internet_gateway"]).is_empty(), "the example VPC is private");
}

/// The inputs and outputs tables of a README, generated from the module's variables and outputs.
fn docs_tables(module: &Module) -> String {
    fn cell(s: &str) -> String {
        s.replace('|', "\\|").replace('\n', " ")
    }
    let mut variables = module.blocks("variable", &[]);
    variables.sort_by_key(|b| b.labels()[0].as_str().to_string());
    let mut out =
        String::from("## Inputs\n\n| Name | Description | Type | Default | Required |\n|---|---|---|---|:-:|\n");
    for v in variables {
        let body = v.body();
        let description = attr(body, "description").map(string).unwrap_or_default();
        let ty = attr(body, "type").map(text).unwrap_or_else(|| "any".into());
        let (default, required) = match attr(body, "default") {
            Some(d) => (format!("`{}`", cell(&text(d))), "no"),
            None => ("n/a".to_string(), "yes"),
        };
        out += &format!(
            "| `{}` | {} | `{}` | {} | {} |\n",
            v.labels()[0].as_str(),
            cell(&description),
            cell(&ty),
            default,
            required
        );
    }
    let mut outputs = module.blocks("output", &[]);
    outputs.sort_by_key(|b| b.labels()[0].as_str().to_string());
    out += "\n## Outputs\n\n| Name | Description |\n|---|---|\n";
    for o in outputs {
        let description = attr(o.body(), "description").map(string).unwrap_or_default();
        out += &format!("| `{}` | {} |\n", o.labels()[0].as_str(), cell(&description));
    }
    out
}

const DOCS_BEGIN: &str = "<!-- BEGIN_TF_DOCS: generated from variables.tf and outputs.tf by tests/it/terraform.rs; UPDATE_TF_DOCS=1 cargo test --test it docs_tables rewrites it -->\n";
const DOCS_END: &str = "<!-- END_TF_DOCS -->";

#[test]
fn docs_tables_match_variables_and_outputs() {
    for dir in ["terraform", "terraform/examples/complete"] {
        let module = Module::load(&repo().join(dir));
        let readme_path = repo().join(dir).join("README.md");
        let readme = std::fs::read_to_string(&readme_path).unwrap_or_else(|e| panic!("{}: {e}", readme_path.display()));
        let start = readme.find(DOCS_BEGIN).unwrap_or_else(|| panic!("{}: no {DOCS_BEGIN}", readme_path.display()));
        let end = readme.find(DOCS_END).unwrap_or_else(|| panic!("{}: no {DOCS_END}", readme_path.display()));
        let generated = docs_tables(&module);
        let current = &readme[start + DOCS_BEGIN.len()..end];
        if current != generated {
            if std::env::var_os("UPDATE_TF_DOCS").is_some() {
                let updated = format!("{}{DOCS_BEGIN}{generated}{}", &readme[..start], &readme[end..]);
                std::fs::write(&readme_path, updated).unwrap();
            } else {
                panic!(
                    "{}: the inputs/outputs tables differ from {dir}/variables.tf and outputs.tf; regenerate with \
                     UPDATE_TF_DOCS=1 cargo test --test it docs_tables\n--- in the README\n{current}\n--- generated\n{generated}",
                    readme_path.display()
                );
            }
        }
    }
}

/// The `invoke_command` output's template (tests/it/make.rs runs it with the real AWS CLI v1).
pub(crate) fn invoke_command_output() -> String {
    string(attr(module().block("output", &["invoke_command"]).body(), "value").unwrap())
}

#[test]
fn invoke_command_output_is_the_safe_one_make_invoke_runs() {
    let output = invoke_command_output();
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    // No client-side retry (a second invocation of a long migration) and a read timeout as long as Lambda's.
    for flag in ["AWS_MAX_ATTEMPTS=1 ", "--cli-read-timeout 900"] {
        assert!(output.contains(flag), "invoke_command lacks {flag}: {output}");
        assert!(makefile.contains(flag), "make invoke lacks {flag}");
    }
    // AWS CLI v1 refuses this v2-only option: the printed command must work with both.
    assert!(!output.contains("--cli-binary-format"), "invoke_command fails with AWS CLI v1: {output}");
}

#[test]
fn users_tags_win_over_the_modules_defaults() {
    let module = module();
    let Expression::FuncCall(merge) = module.local("tags") else { panic!("tags = merge(...)") };
    assert_eq!(merge.name.name.as_str(), "merge");
    // merge() keeps the last value of a key: the user's map must come last.
    assert_eq!(path(merge.args.last().unwrap()).as_deref(), Some("var.tags"));
    let defaults: hcl::Map<String, hcl::Value> =
        match merge.args[0].evaluate(&Context::new()).expect("the module's defaults are literals") {
            hcl::Value::Object(o) => o,
            other => panic!("{other:?}"),
        };
    assert!(defaults.contains_key("app"), "{defaults:?}");
}

/// AWS's own metrics the dashboard may draw: namespace, name, dimension, unit (as CloudWatch documents them).
const AWS_METRICS: &[(&str, &str, &str, &str)] = &[
    ("AWS/Lambda", "Errors", "FunctionName", "Count"),
    ("AWS/Lambda", "Throttles", "FunctionName", "Count"),
    ("AWS/Lambda", "Duration", "FunctionName", "Milliseconds"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "Count"),
];

type Object = hcl::Object<ObjectKey, Expression>;

fn field<'a>(o: &'a Object, name: &str) -> Option<&'a Expression> {
    o.iter().find(|(k, _)| key(k) == name).map(|(_, v)| v)
}

/// The widgets (objects with a `type`) in a dashboard body, through concat() and conditionals.
fn widgets<'a>(e: &'a Expression, out: &mut Vec<&'a Object>) {
    match e {
        Expression::Object(o) if field(o, "type").is_some() => out.push(o),
        Expression::Object(o) => o.values().for_each(|v| widgets(v, out)),
        Expression::Array(items) => items.iter().for_each(|v| widgets(v, out)),
        Expression::FuncCall(call) => call.args.iter().for_each(|v| widgets(v, out)),
        Expression::Conditional(c) => {
            widgets(&c.true_expr, out);
            widgets(&c.false_expr, out);
        }
        Expression::Parenthesis(inner) => widgets(inner, out),
        _ => {}
    }
}

/// One metric a dashboard graph draws.
#[derive(Debug)]
struct Drawn {
    namespace: String,
    name: String,
    /// (dimension, the Terraform reference giving its value)
    dimensions: Vec<(String, String)>,
    /// The unit the graph's axis is labelled with.
    axis: String,
}

/// Every metric the dashboard draws, from the `jsonencode(...)` of its body in the HCL.
fn dashboard_metrics(module: &Module) -> (Vec<Drawn>, Vec<String>) {
    let dashboard = module.block("resource", &["aws_cloudwatch_dashboard", "this"]).body();
    let body = attr(dashboard, "dashboard_body").expect("dashboard_body");
    let Expression::FuncCall(call) = body else { panic!("dashboard_body = jsonencode(...), found {}", text(body)) };
    assert_eq!(call.name.name.as_str(), "jsonencode");
    let mut found = Vec::new();
    widgets(&call.args[0], &mut found);
    let (mut drawn, mut alarms) = (Vec::new(), Vec::new());
    for widget in found {
        let kind = string(field(widget, "type").unwrap());
        let Some(Expression::Object(props)) = field(widget, "properties") else { panic!("{kind}: no properties") };
        match kind.as_str() {
            "metric" => {
                let title = field(props, "title").map(string).unwrap_or_default();
                assert_eq!(field(props, "region").and_then(path).as_deref(), Some("local.region"), "{title}");
                let axis = match field(props, "yAxis") {
                    Some(Expression::Object(y)) => match field(y, "left") {
                        Some(Expression::Object(left)) => field(left, "label").map(string),
                        _ => None,
                    },
                    _ => None,
                };
                let axis = axis.unwrap_or_else(|| panic!("{title}: no yAxis.left.label naming the unit"));
                let Some(Expression::Array(rows)) = field(props, "metrics") else { panic!("{title}: metrics") };
                for row in rows {
                    let Expression::Array(items) = row else { panic!("{title}: a metric row {}", text(row)) };
                    let items: Vec<&Expression> =
                        items.iter().filter(|i| !matches!(i, Expression::Object(_))).collect();
                    assert!(items.len() >= 2 && items.len().is_multiple_of(2), "{title}: {}", text(row));
                    let dimensions = items[2..]
                        .chunks(2)
                        .map(|pair| {
                            let value = path(pair[1]).unwrap_or_else(|| panic!("{title}: {}", text(pair[1])));
                            (string(pair[0]), value)
                        })
                        .collect();
                    drawn.push(Drawn {
                        namespace: string(items[0]),
                        name: string(items[1]),
                        dimensions,
                        axis: axis.clone(),
                    });
                }
            }
            "alarm" => alarms.push(text(field(props, "alarms").expect("alarms"))),
            "text" => {}
            other => panic!("unexpected widget type {other}"),
        }
    }
    (drawn, alarms)
}

#[test]
fn dashboard_draws_the_metrics_the_binary_emits_as_it_emits_them() {
    let module = module();
    assert_eq!(text(module.default("create_dashboard")), "true");
    let (drawn, alarms) = dashboard_metrics(&module);
    let function = |handler: &str| format!("aws_lambda_function.{handler}.function_name");
    for d in &drawn {
        if d.namespace == metrics::NAMESPACE {
            // Ours: a metric the binary emits, under the dimension it emits it with, of the function that emits it.
            let m = EMITTED
                .iter()
                .find(|m| m.name == d.name)
                .unwrap_or_else(|| panic!("the dashboard draws {}, which the binary never emits", d.name));
            let dims: Vec<&str> = d.dimensions.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(dims, metrics::DIMENSIONS, "{}", d.name);
            assert_eq!(d.dimensions[0].1, function(m.handler), "{} is emitted by the {} function", d.name, m.handler);
            assert_eq!(d.axis, m.unit, "{} is emitted in {}, drawn on an axis of {}", d.name, m.unit, d.axis);
        } else {
            let (_, _, dimension, unit) = AWS_METRICS
                .iter()
                .find(|(ns, name, _, _)| *ns == d.namespace && *name == d.name)
                .unwrap_or_else(|| panic!("unexpected metric {d:?}"));
            assert_eq!(d.dimensions.len(), 1, "{d:?}");
            assert_eq!(d.dimensions[0].0, *dimension, "{d:?}");
            assert_eq!(d.axis, *unit, "{d:?}");
            let value = d.dimensions[0].1.as_str();
            let ours = HANDLER_NAMES.iter().map(|h| function(h)).chain(["aws_sqs_queue.refresh_dlq.name".into()]);
            assert!(ours.clone().any(|v| v == value), "{} of {value}, not one of this module's", d.name);
        }
    }
    // Everything the binary emits is drawn; both functions' errors, throttles and durations; the queue's depth.
    for m in EMITTED {
        assert!(drawn.iter().any(|d| d.namespace == metrics::NAMESPACE && d.name == m.name), "{} not drawn", m.name);
    }
    for name in ["Errors", "Throttles", "Duration"] {
        for handler in HANDLER_NAMES {
            assert!(
                drawn
                    .iter()
                    .any(|d| d.namespace == "AWS/Lambda" && d.name == name && d.dimensions[0].1 == function(handler)),
                "{handler}'s {name} not drawn"
            );
        }
    }
    assert!(drawn.iter().any(|d| d.name == "ApproximateNumberOfMessagesVisible"), "the queue's depth is not drawn");
    // The alarms' states: every alarm the module creates.
    assert_eq!(alarms.len(), 1, "one alarm widget: {alarms:?}");
    for alarm in module.blocks("resource", &["aws_cloudwatch_metric_alarm"]) {
        let reference = format!("aws_cloudwatch_metric_alarm.{}", alarm.labels()[1].as_str());
        assert!(alarms[0].contains(&reference), "the alarm widget lacks {reference}: {}", alarms[0]);
    }
    let url = text(attr(module.block("output", &["dashboard_url"]).body(), "value").unwrap());
    assert!(url.contains("aws_cloudwatch_dashboard.this[0].dashboard_name") && url.contains("var.create_dashboard"));
}
