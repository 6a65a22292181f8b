//! The terraform CLI with the local copy of the hashicorp/aws provider, on a copy of the repository's
//! terraform/ and migrations/ (no .terraform/ or state lands in the tree).

use std::{
    path::{Path, PathBuf},
    process::Output,
};

/// The plugin directory holding registry.terraform.io/hashicorp/aws (scripts/tf-plugin-dir.sh finds it).
/// None only when `make test` found none and said so loudly (TF_PROVIDER_MISSING_OK=1); otherwise its
/// absence fails the test: a check that did not run is not a check that passed.
pub fn plugin_dir() -> Option<PathBuf> {
    let out = std::process::Command::new(super::pg::root().join("scripts/tf-plugin-dir.sh")).output().unwrap();
    let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
    if out.status.success() && !dir.is_empty() {
        return Some(PathBuf::from(dir));
    }
    if std::env::var_os("TF_PROVIDER_MISSING_OK").is_some() {
        eprintln!("WARNING: no local hashicorp/aws provider: this Terraform test did NOT run (TF_PROVIDER_MISSING_OK)");
        return None;
    }
    panic!("no local copy of the hashicorp/aws provider (registry.terraform.io/hashicorp/aws): set TF_PLUGIN_DIR");
}

/// A copy of terraform/ and migrations/ in a temporary directory.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    plugin_dir: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".terraform"
            || name.to_string_lossy().starts_with("terraform.tfstate")
            || name == ".terraform.lock.hcl"
        {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

impl Workspace {
    pub fn new(plugin_dir: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for part in ["terraform", "migrations"] {
            copy_dir(&super::pg::root().join(part), &dir.path().join(part));
        }
        Workspace { dir, plugin_dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `terraform init` of the configuration in `rel`, from the local plugin directory only.
    pub async fn init(&self, rel: &str) {
        let plugin = format!("-plugin-dir={}", self.plugin_dir.display());
        let out = self.terraform(rel, &["init", "-backend=false", "-input=false", &plugin]).await;
        assert!(out.status.success(), "terraform init {rel}: {}", text(&out));
    }

    /// Runs terraform in `rel` (no colour, no prompts) and returns what it did.
    pub async fn terraform(&self, rel: &str, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new("terraform");
        cmd.arg(format!("-chdir={}", self.path(rel).display()))
            .args(args)
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("NO_COLOR", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .kill_on_drop(true);
        cmd.output().await.expect("run terraform (on PATH)")
    }
}

/// stdout and stderr of a terraform run.
pub fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
