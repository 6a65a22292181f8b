//! Integration tests: everything that crosses a process or a socket, in one test binary.

mod adoption;
mod batches;
mod cli_flags;
mod continuation;
mod deadline;
mod definer;
mod engine;
mod hardening;
mod history;
mod interruptions;
mod job_progress;
mod lambda;
mod majors;
mod make;
mod plan;
mod privileges;
mod refresh;
mod refresh_role;
mod scaffold;
mod schemas;
mod snapshot;
mod split_corpus;
mod support;
mod terraform;
mod tf_apply;
mod verify;
