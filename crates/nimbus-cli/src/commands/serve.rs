//! `nimbus serve`: run the server until SIGINT/SIGTERM.

use crate::cli::ServerArgs;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub async fn run(args: ServerArgs) -> Result<()> {
    nimbus_server::init_tracing(args.log_format.into());
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./.nimbus"));
    let server = bind(&args, &data_dir).await?;
    super::print(listening_line(&server.public_url(), &data_dir))?;
    if let Some(a) = server.s3_addr() {
        super::print(s3_line(a))?;
    }
    print_bootstrap(&server);
    server
        .run(shutdown_requested())
        .await
        .context("the server stopped with an error")
}

/// The server configuration the flags describe.
pub fn config(args: &ServerArgs, data_dir: &Path) -> nimbus_server::Config {
    // Field by field so this keeps compiling when the server grows new settings.
    #[allow(clippy::field_reassign_with_default)]
    {
        let mut c = nimbus_server::Config::default();
        c.listen = args.listen;
        c.metrics_listen = args.metrics_listen;
        c.s3_listen = args.s3_listen;
        c.s3_quota = nimbus_server::S3Quota {
            max_bytes: args.s3_max_bytes,
            max_objects: args.s3_max_objects,
        };
        c.metrics = args.metrics != "off";
        c.otlp_endpoint = args.otlp_endpoint.clone();
        c.data_dir = data_dir.to_path_buf();
        c.database = args.database.clone();
        c.nats = args.nats.clone();
        c.node_id = args.node_id.clone();
        c.master_key_file = args.master_key_file.clone();
        c.idle_timeout = args.idle_timeout;
        c.queue_timeout = args.queue_timeout_ms;
        c.shutdown_grace = args.shutdown_grace;
        c.events.retry_base = args.retry_base_ms;
        c.events.circuit_threshold = args.circuit_threshold.max(1);
        c.events.circuit_cooldown = args.circuit_cooldown_ms;
        c.events.time_scale = args.time_scale.max(1);
        c.missed_schedules = args.missed_schedules.parse().unwrap_or_default();
        c.isolation = args.isolation.parse().unwrap_or_default();
        c.auth = args.auth != "off";
        c.tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(nimbus_server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        c.health.min_free_disk = args.min_free_disk_mb << 20;
        c.health.low_free_disk = args.low_free_disk_mb << 20;
        c.cache_max_bytes = args.cache_max_bytes;
        args.limits.apply(&mut c);
        args.concurrency.apply(&mut c);
        c
    }
}

pub async fn bind(args: &ServerArgs, data_dir: &Path) -> Result<nimbus_server::Server> {
    nimbus_server::Server::bind(config(args, data_dir))
        .await
        .with_context(|| {
            format!(
                "cannot start nimbus on {} (data: {})",
                args.listen,
                data_dir.display()
            )
        })
}

/// Shows the bootstrap admin key, once, on stderr.
pub fn print_bootstrap(server: &nimbus_server::Server) {
    if let Some(k) = server.bootstrap_key() {
        eprintln!(
            "created the bootstrap admin key (shown once; also saved to {file}, mode 0600):\n  \
             NIMBUS_ACCESS_KEY_ID={id}\n  NIMBUS_SECRET_ACCESS_KEY={secret}\n\
             the nimbus CLI run next to that data dir uses it by itself; elsewhere export those two \
             variables or NIMBUS_CREDENTIALS_FILE={file} (boto3 and the AWS CLI: AWS_ACCESS_KEY_ID/\
             AWS_SECRET_ACCESS_KEY). Create narrower keys with `nimbus keys create`.",
            file = k.file.display(),
            id = k.access_key_id,
            secret = k.secret_access_key,
        );
    }
}

/// `nimbus listening on http(s)://ADDR (data: DIR)`
pub fn listening_line(url: &str, data_dir: &Path) -> String {
    format!("nimbus listening on {url} (data: {})\n", data_dir.display())
}

/// Where the S3 listener is.
pub fn s3_line(a: std::net::SocketAddr) -> String {
    format!(
        "S3 API on http://{a} (path-style, or BUCKET.localhost:{})\n",
        a.port()
    )
}

/// Resolves on the first SIGINT or SIGTERM; a second Ctrl-C exits at once without draining.
pub async fn shutdown_requested() {
    nimbus_server::shutdown_signal().await;
    eprintln!("shutting down (Ctrl-C again to exit now)");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("exiting without waiting for in-flight requests");
            std::process::exit(130);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::time::Duration;

    #[test]
    fn config_from_flags() {
        let cli = Cli::try_parse_from([
            "nimbus",
            "serve",
            "--listen",
            "127.0.0.1:9999",
            "--idle-timeout",
            "5m",
            "--queue-timeout-ms",
            "250",
            "--shutdown-grace",
            "3",
            "--account-concurrency",
            "6",
            "--max-scale-rate",
            "2:4",
            "--queue-depth",
            "7",
            "--account-queue-depth",
            "9",
            "--instance-memory-budget",
            "512",
            "--memory-floor",
            "off",
            "--max-pids",
            "2000",
            "--min-free-disk-mb",
            "16",
            "--low-free-disk-mb",
            "32",
            "--metrics-listen",
            "9464",
            "--s3-listen",
            ":9000",
            "--s3-max-bytes",
            "1048576",
            "--s3-max-objects",
            "100",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let c = config(&args, Path::new("/tmp/d"));
        assert_eq!(c.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.queue_timeout, Duration::from_millis(250));
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.tls, None);
        assert_eq!(c.account_concurrency, 6);
        assert_eq!(
            c.scale_rate,
            nimbus_server::ScaleRate {
                per_sec: 2.0,
                burst: 4
            }
        );
        assert_eq!((c.queue_depth, c.account_queue_depth), (7, 9));
        assert_eq!(c.instance_memory_budget, Some(512 << 20));
        assert_eq!(c.memory_floor, 0);
        assert_eq!(c.max_pids, 2000);
        assert_eq!(
            (c.health.min_free_disk, c.health.low_free_disk),
            (16 << 20, 32 << 20)
        );
        // A bare port is loopback.
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.s3_listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(
            c.s3_quota,
            nimbus_server::S3Quota {
                max_bytes: Some(1 << 20),
                max_objects: Some(100)
            }
        );
        // Without the flag: half the host's task limit.
        let cli = Cli::try_parse_from(["nimbus", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let c = config(&args, Path::new("/tmp/d"));
        assert_eq!(c.max_pids, nimbus_server::Config::default().max_pids);
        assert_eq!(c.metrics_listen, None, "metrics are off unless asked for");
        assert_eq!(c.s3_listen, None, "the S3 listener is off unless asked for");
        assert!(c.s3_quota.is_unlimited(), "no S3 quota unless asked for");
        assert!(c.metrics, "metrics are recorded unless turned off");
        let cli = Cli::try_parse_from(["nimbus", "serve", "--metrics", "off"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert!(!config(&args, Path::new("/tmp/d")).metrics);
        assert!(Cli::try_parse_from(["nimbus", "serve", "--metrics", "no"]).is_err());
        assert!(Cli::try_parse_from(["nimbus", "serve", "--max-pids", "0"]).is_err());
    }

    #[test]
    fn listening() {
        assert_eq!(
            listening_line("http://127.0.0.1:8080", Path::new("./.nimbus")),
            "nimbus listening on http://127.0.0.1:8080 (data: ./.nimbus)\n"
        );
    }
}
