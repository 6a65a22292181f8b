//! scanner-migrator: keeps the S3 scanner's PostgreSQL schema current and its `job_progress`
//! statistics fresh, as an AWS Lambda (handlers `migrate` and `refresh`) or a CLI.

pub mod adopt;
pub mod app;
pub mod batch;
pub mod cli;
pub mod command;
pub mod config;
pub mod connection;
pub mod continuation;
pub mod credentials;
pub mod data_check;
pub mod db;
pub mod deadline;
pub mod detached;
pub mod error;
pub mod handlers;
pub mod impact;
pub mod metrics;
pub mod migrations;
pub mod plan;
pub mod privileges;
pub mod refresh;
pub mod refresh_role;
pub mod runner;
pub mod scaffold;
pub mod snapshot;
pub mod split;
pub mod verify;
