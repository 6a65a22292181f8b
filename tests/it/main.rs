//! Integration tests: everything that crosses a process or a socket, in one test binary.

mod adoption;
mod cli_flags;
mod deadline;
mod engine;
mod hardening;
mod history;
mod job_progress;
mod lambda;
mod make;
mod refresh;
mod refresh_role;
mod snapshot;
mod support;
mod terraform;
mod tf_apply;
mod verify;
