//! End-to-end tests: each starts the real `nimbus` binary on a free port with its own
//! data dir and drives it over HTTP and through the CLI.

mod abuse;
mod alarms;
mod async_events;
mod auth;
mod aws_cli;
mod bad_input;
mod bus;
mod cli;
mod concurrency;
mod connections;
mod console;
mod density;
mod deps;
mod dlq;
mod docs;
mod doctor;
mod durability;
mod escape;
mod gc;
mod go;
mod health;
mod history;
mod http;
mod java;
mod jwt;
mod layers;
mod limits;
mod logs;
mod metrics;
mod network;
mod pids;
mod provisioned;
mod python;
mod queues;
mod ric;
mod runtimes;
mod s3;
mod secrets;
mod sqs;
mod stem;
mod streaming;
#[cfg(feature = "tls")]
mod tls;
mod traces;
mod up;
