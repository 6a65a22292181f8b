//! The commands, written once: the CLI's subcommands, the migrate handler's payload parser and
//! the "accepted: ..." message are all derived from [`COMMANDS`].

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Apply pending migrations, up to `target` when given.
    Migrate { target: Option<i64> },
    /// Report applied and pending migrations.
    Status,
    /// Dry run: what `migrate` would do. Changes nothing.
    Plan { target: Option<i64> },
    /// Compare the live schema with what the applied migrations produce; with `data`, also
    /// job_progress with a direct count per job.
    Verify { data: bool },
    /// Run the down scripts of every applied migration above `to`, newest first.
    Rollback { to: i64 },
    /// Fold or refresh `job_progress` (the refresh handler's work).
    Refresh,
}

/// Whether a command takes a target version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetArg {
    /// It takes none.
    None,
    /// It may take one.
    Optional,
    /// It needs one (a rollback is never implicit).
    Required,
}

/// One command as users see it.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Its name (`migrate`).
    pub name: &'static str,
    /// One line of help.
    pub about: &'static str,
    /// Its target version argument.
    pub target: TargetArg,
    /// What the target means for this command.
    pub target_help: &'static str,
    /// Whether the migrate Lambda handler accepts it in its payload (refresh has its own handler).
    pub in_migrate_payload: bool,
}

/// Every command.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "migrate",
        about: "Apply pending migrations (all, or up to --target), then verify",
        target: TargetArg::Optional,
        target_help: "stop after this version",
        in_migrate_payload: true,
    },
    CommandSpec {
        name: "status",
        about: "Show applied and pending migrations and the history",
        target: TargetArg::None,
        target_help: "",
        in_migrate_payload: true,
    },
    CommandSpec {
        name: "plan",
        about: "Show what migrate would run, and how; changes nothing",
        target: TargetArg::Optional,
        target_help: "plan up to this version",
        in_migrate_payload: true,
    },
    CommandSpec {
        name: "verify",
        about: "Compare the live schema with what the applied migrations produce",
        target: TargetArg::None,
        target_help: "",
        in_migrate_payload: true,
    },
    CommandSpec {
        name: "rollback",
        about: "Undo applied migrations above --target, newest first (drops what they added)",
        target: TargetArg::Required,
        target_help: "the version to roll back to (required: a rollback is never implicit)",
        in_migrate_payload: true,
    },
    CommandSpec {
        name: "refresh",
        about: "Bring job_progress up to date (skips while a migration runs)",
        target: TargetArg::None,
        target_help: "",
        in_migrate_payload: false,
    },
];

impl Command {
    /// The command's name as users type it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate { .. } => "migrate",
            Command::Status => "status",
            Command::Plan { .. } => "plan",
            Command::Verify { .. } => "verify",
            Command::Rollback { .. } => "rollback",
            Command::Refresh => "refresh",
        }
    }

    /// Builds a command from its name and target, as both faces receive them.
    pub fn parse(name: &str, target: Option<i64>) -> Result<Command, String> {
        let spec = COMMANDS
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("unknown command `{name}` (known: {})", names(|_| true)))?;
        if let Some(t) = target
            && t < 0
        {
            return Err(format!("target {t} is negative"));
        }
        match (spec.target, target) {
            (TargetArg::None, Some(_)) => {
                return Err(format!("\"target\" applies only to {}", names(|c| c.target != TargetArg::None)));
            }
            (TargetArg::Required, None) => {
                return Err(format!("{name} needs an explicit target ({})", spec.target_help));
            }
            _ => {}
        }
        Ok(match name {
            "migrate" => Command::Migrate { target },
            "status" => Command::Status,
            "plan" => Command::Plan { target },
            "verify" => Command::Verify { data: false },
            "rollback" => Command::Rollback { to: target.unwrap_or_default() },
            "refresh" => Command::Refresh,
            other => unreachable!("{other} is in COMMANDS but not mapped"),
        })
    }

    /// Asks `verify` to compare the data as well (`--data`, `"data": true`); only verify takes it.
    pub fn with_data(self, data: bool) -> Result<Command, String> {
        match self {
            Command::Verify { .. } => Ok(Command::Verify { data }),
            _ if data => Err("\"data\" applies only to verify".into()),
            other => Ok(other),
        }
    }

    /// Whether it changes the schema (and so takes the migration lock).
    pub fn changes_schema(&self) -> bool {
        matches!(self, Command::Migrate { .. } | Command::Rollback { .. })
    }
}

/// The names of the commands `keep` selects, comma-separated.
pub fn names(keep: impl Fn(&CommandSpec) -> bool) -> String {
    COMMANDS.iter().filter(|c| keep(c)).map(|c| c.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_command_parses_to_itself() {
        for spec in COMMANDS {
            let target = (spec.target == TargetArg::Required).then_some(1);
            let cmd = Command::parse(spec.name, target).unwrap();
            assert_eq!(cmd.name(), spec.name);
        }
    }

    #[test]
    fn targets_are_checked_against_the_table() {
        assert_eq!(Command::parse("migrate", Some(2)).unwrap(), Command::Migrate { target: Some(2) });
        assert_eq!(Command::parse("rollback", Some(1)).unwrap(), Command::Rollback { to: 1 });
        assert!(Command::parse("rollback", None).unwrap_err().contains("explicit target"));
        assert!(Command::parse("status", Some(1)).unwrap_err().contains("only to migrate, plan, rollback"));
        assert!(Command::parse("migrate", Some(-1)).unwrap_err().contains("negative"));
        assert_eq!(Command::parse("verify", None).unwrap().with_data(true).unwrap(), Command::Verify { data: true });
        assert!(Command::Status.with_data(true).unwrap_err().contains("only to verify"));
        assert_eq!(Command::Status.with_data(false).unwrap(), Command::Status);
        let err = Command::parse("drop", None).unwrap_err();
        assert!(err.contains("drop") && err.contains("migrate, status, plan, verify, rollback, refresh"), "{err}");
    }
}
