//! `nimbus up`: an in-process server for the project in DIR, every function of its manifest
//! deployed through the `/v1` API, and redeploys when files change.

use super::deploy::{self, Target, MANIFEST};
use crate::cli::UpArgs;
use crate::client::Client;
use crate::output::DeployReply;
use anyhow::{anyhow, Context, Result};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const DEBOUNCE: Duration = Duration::from_millis(300);
/// Directory names never watched (and whose changes never trigger a redeploy).
const IGNORED_DIRS: &[&str] = &[".nimbus", ".git", "node_modules", "target"];

pub async fn run(args: UpArgs) -> Result<()> {
    let dir = args.dir.clone();
    let mut targets = deploy::manifest_targets(&dir)?;
    nimbus_server::init_tracing(args.server.log_format.into());
    let data_dir = args
        .server
        .data_dir
        .clone()
        .unwrap_or_else(|| dir.join(".nimbus"));
    // `up` serves the object store too: on the configured address, else a free loopback port.
    let mut server_args = args.server.clone();
    server_args
        .s3_listen
        .get_or_insert_with(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = super::serve::bind(&server_args, &data_dir).await?;
    let addr = server.local_addr();
    super::print(super::serve::listening_line(
        &server.public_url(),
        &data_dir,
    ))?;
    if let Some(a) = server.s3_addr() {
        super::print(super::serve::s3_line(a))?;
    }
    super::serve::print_bootstrap(&server);
    // `up` deploys with a key of its own, held by the server in memory only.
    let own_key = server
        .local_credentials()
        .map(|(id, secret)| crate::credentials::Credentials {
            access_key_id: id,
            secret_access_key: secret,
        });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let mut server_task = tokio::spawn(server.run(stopped(stop_rx.clone())));
    let signal_tx = stop_tx.clone();
    let signal_task = tokio::spawn(async move {
        super::serve::shutdown_requested().await;
        let _ = signal_tx.send(true);
    });

    let scheme = if args.server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{}", connect_addr(addr));
    let client = Client::for_own_server(&base)?.with_credentials(own_key);
    let options = deploy::DeployOptions {
        no_build: args.no_build,
    };
    let work = async {
        publish_layers(&client, &dir, &mut targets).await;
        let mut deployed = Vec::new();
        let mut failed = 0;
        for t in &targets {
            // One function that cannot be built (say, no Go toolchain here) must not keep
            // the others from being served: report it and go on.
            match deploy::deploy(&client, t, options).await {
                Ok(reply) => deployed.push((t.clone(), deploy::parse_reply(&reply)?)),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: skipping {}: {e:#}", t.name);
                    if let Some(h) = crate::errors::hint(&e) {
                        eprintln!("hint: {h}");
                    }
                }
            }
        }
        if deployed.is_empty() && failed > 0 {
            return Err(anyhow!(
                "no function of {} could be deployed",
                dir.display()
            ));
        }
        super::print(summary(&base, &deployed))?;
        super::queue::apply_manifest_queues(&client, &dir).await;
        apply_rules(&client, &dir).await;
        apply_workflows(&client, &dir).await;
        watch_and_redeploy(&client, &dir, &data_dir, &mut targets, options).await
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = stopped(stop_rx) => Ok(()),
        r = &mut server_task => {
            signal_task.abort();
            return match r {
                Ok(Ok(())) => Err(anyhow!("the server stopped unexpectedly")),
                Ok(Err(e)) => Err(e.context("the server stopped with an error")),
                Err(e) => Err(anyhow!("the server task failed: {e}")),
            };
        }
    };
    // Stop the server (a no-op after a signal) and wait for it to drain.
    let _ = stop_tx.send(true);
    let served = server_task
        .await
        .map_err(|e| anyhow!("the server task failed: {e}"))?;
    signal_task.abort();
    outcome?;
    served.context("the server stopped with an error")
}

/// Resolves once `true` is sent (or the sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Where to connect to reach a listener: unspecified addresses mean loopback.
fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// What `nimbus up` prints once everything is deployed: name, runtime and URLs of each function.
fn summary(base: &str, deployed: &[(Target, DeployReply)]) -> String {
    let mut out = String::new();
    for (t, reply) in deployed {
        out.push_str(&format!(
            "{}  {}  version {}\n",
            t.name, t.config.runtime, reply.version
        ));
        if t.config.url {
            out.push_str(&format!("  {base}/fn/{}/\n", t.name));
        }
        for route in &t.config.routes {
            let path = route.key().split_once(' ').map_or("/", |(_, p)| p);
            out.push_str(&format!("  {}  {base}{path}\n", route.key()));
        }
    }
    out
}

/// Watches `dir` and redeploys what changed until an error ends the watch.
async fn watch_and_redeploy(
    client: &Client,
    dir: &Path,
    data_dir: &Path,
    targets: &mut Vec<Target>,
    options: deploy::DeployOptions,
) -> Result<()> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    let filter = PathFilter {
        root: root.clone(),
        data_dir: data_dir.canonicalize().ok(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
        let _ = tx.send(res);
    })
    .context("cannot start the file watcher")?;
    watch_tree(&mut watcher, &root, &filter)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    eprintln!("watching {} for changes (Ctrl-C to stop)", dir.display());

    loop {
        let mut changed = BTreeSet::new();
        let first = rx.recv().await.context("the file watcher stopped")?;
        collect(first, &filter, &mut watcher, &mut changed);
        // Debounce: wait until nothing changed for DEBOUNCE.
        while let Ok(next) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
            collect(
                next.context("the file watcher stopped")?,
                &filter,
                &mut watcher,
                &mut changed,
            );
        }
        if changed.is_empty() {
            continue;
        }
        let selected = if changed.contains(&root.join(MANIFEST)) {
            match deploy::manifest_targets(dir) {
                Ok(t) => {
                    *targets = t;
                    (0..targets.len()).collect()
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            }
        } else {
            affected(&root, targets, &changed)
        };
        let manifest_changed = changed.contains(&root.join(MANIFEST));
        // A changed workflow definition updates its state machine.
        let flow_changed = super::flows::definition_files(dir)
            .is_ok_and(|files| files.iter().any(|f| changed.contains(f)));
        // A changed layer directory redeploys every function: each one's layers are
        // published again when their content changed (and are unchanged otherwise).
        let layer_changed = deploy::manifest_layers(dir).is_ok_and(|layers| {
            layers
                .iter()
                .any(|l| changed.iter().any(|p| p.starts_with(root.join(&l.path))))
        });
        let selected: Vec<usize> = if layer_changed {
            (0..targets.len()).collect()
        } else {
            selected.into_iter().collect()
        };
        if manifest_changed || layer_changed {
            *targets = match deploy::manifest_targets(dir) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            };
            publish_layers(client, dir, targets).await;
        }
        for i in selected {
            let t = &targets[i];
            let started = std::time::Instant::now();
            match deploy::deploy(client, t, options)
                .await
                .and_then(|r| deploy::parse_reply(&r))
            {
                Ok(r) => super::print(format!(
                    "redeployed {} (version {}{}) in {:.2}s\n",
                    t.name,
                    r.version,
                    crate::output::build_note(&r),
                    started.elapsed().as_secs_f64()
                ))?,
                Err(e) => {
                    eprintln!("error: cannot redeploy {}: {e:#}", t.name);
                    if let Some(h) = crate::errors::hint(&e) {
                        eprintln!("hint: {h}");
                    }
                }
            }
        }
        if changed.contains(&root.join(MANIFEST)) {
            super::queue::apply_manifest_queues(client, dir).await;
        }
        if manifest_changed {
            apply_rules(client, dir).await;
        }
        if manifest_changed || flow_changed {
            apply_workflows(client, dir).await;
        }
    }
}

/// Creates or updates the manifest's workflows (after everything their definitions
/// name); failures are reported, not fatal.
async fn apply_workflows(client: &Client, dir: &Path) {
    let applied = match super::flows::manifest_workflows(dir) {
        Ok(workflows) => super::flows::apply(client, &workflows).await,
        Err(e) => Err(e),
    };
    report(applied);
}

/// Publishes the manifest's changed layers and gives `targets` their ARNs; failures are
/// reported, not fatal (the functions that name a layer then fail to deploy, by name).
async fn publish_layers(client: &Client, dir: &Path, targets: &mut [Target]) {
    // Roles first: the functions' instances assume them.
    let roles = match super::role::manifest_roles(dir) {
        Ok(roles) => super::role::apply_roles(client, &roles).await,
        Err(e) => Err(e),
    };
    report(roles);
    let published = match deploy::manifest_layers(dir) {
        Ok(layers) => super::layer::publish_manifest_layers(client, dir, &layers, targets).await,
        Err(e) => Err(e),
    };
    report(published);
}

/// Saves the manifest's buses and rules (schedules included), then its alarms (after the
/// functions they watch) and its S3 triggers; failures are reported, not fatal.
async fn apply_rules(client: &Client, dir: &Path) {
    let rules = match deploy::manifest_bus_config(dir) {
        Ok((buses, rules)) => deploy::apply_bus_config(client, &buses, &rules).await,
        Err(e) => Err(e),
    };
    report(rules);
    let alarms = match deploy::manifest_alarms(dir) {
        Ok(alarms) => deploy::apply_alarms(client, &alarms).await,
        Err(e) => Err(e),
    };
    report(alarms);
    let triggers = match deploy::manifest_s3_triggers(dir) {
        Ok((functions, triggers)) => super::s3_triggers::apply(client, &functions, &triggers).await,
        Err(e) => Err(e),
    };
    report(triggers);
    let sources = match deploy::manifest_sources(dir) {
        Ok((functions, sources, targets)) => {
            report(super::sources::apply_targets(client, &targets).await);
            super::sources::apply(client, &functions, &sources).await
        }
        Err(e) => Err(e),
    };
    report(sources);
}

/// Prints the lines of an applied manifest section, or its error.
fn report(applied: Result<Vec<String>>) {
    match applied {
        Ok(lines) => {
            for l in lines {
                let _ = super::print(format!("{l}\n"));
            }
        }
        Err(e) => eprintln!("error: {e:#}"),
    }
}

/// Which changed paths count, relative to the watched root.
struct PathFilter {
    root: PathBuf,
    data_dir: Option<PathBuf>,
}

impl PathFilter {
    fn ignored(&self, path: &Path) -> bool {
        if self
            .data_dir
            .as_deref()
            .is_some_and(|d| path.starts_with(d))
        {
            return true;
        }
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        if rel
            .components()
            .any(|c| IGNORED_DIRS.iter().any(|d| c.as_os_str() == *d))
        {
            return true;
        }
        // editor droppings
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".swx") || name == "4913"
    }
}

/// Adds a non-recursive watch on `dir` and every subdirectory that is not ignored (so
/// `node_modules` and the data dir cost no inotify watches).
fn watch_tree(w: &mut impl Watcher, dir: &Path, filter: &PathFilter) -> notify::Result<()> {
    w.watch(dir, RecursiveMode::NonRecursive)?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            // file_type() does not follow symlinks: linked directories are not watched.
            if entry.file_type().is_ok_and(|t| t.is_dir()) && !filter.ignored(&path) {
                // a subdirectory that vanished or is unreadable is not fatal
                let _ = watch_tree(w, &path, filter);
            }
        }
    }
    Ok(())
}

/// Adds the event's relevant paths to `changed`; new directories get watched.
fn collect(
    res: notify::Result<Event>,
    filter: &PathFilter,
    w: &mut impl Watcher,
    changed: &mut BTreeSet<PathBuf>,
) {
    let event = match res {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: file watcher: {e}");
            return;
        }
    };
    if matches!(event.kind, EventKind::Access(_)) {
        return;
    }
    for path in event.paths {
        if filter.ignored(&path) {
            continue;
        }
        if matches!(event.kind, EventKind::Create(_)) && path.is_dir() && !path.is_symlink() {
            let _ = watch_tree(w, &path, filter);
        }
        changed.insert(path);
    }
}

/// Indices of the targets whose code directory contains a changed path.
fn affected(root: &Path, targets: &[Target], changed: &BTreeSet<PathBuf>) -> Vec<usize> {
    targets
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            let deploy::CodeSource::Dir(code) = &t.code else {
                return false;
            };
            let code = code.canonicalize().unwrap_or_else(|_| root.join(code));
            changed.iter().any(|p| p.starts_with(&code))
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::manifest;

    fn targets(root: &Path) -> Vec<Target> {
        let m = manifest::parse(
            "[functions.api]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\ncode = \"api\"\nurl = true\nroutes = [\"GET /hello/{name}\", \"ANY /x/{proxy+}\"]\n\
             [functions.worker]\nruntime = \"provided.al2023\"\ncode = \"./worker\"\n",
        )
        .unwrap();
        m.into_iter()
            .map(|f| deploy::manifest_target(root, f))
            .collect()
    }

    #[test]
    fn summary_lists_urls_and_routes() {
        let t = targets(Path::new("/p"));
        let r = |v: &str| DeployReply {
            version: v.into(),
            ..Default::default()
        };
        let s = summary(
            "http://127.0.0.1:8080",
            &[(t[0].clone(), r("1")), (t[1].clone(), r("4"))],
        );
        assert_eq!(
            s,
            "api  nodejs20.x  version 1\n  http://127.0.0.1:8080/fn/api/\n  GET /hello/{name}  http://127.0.0.1:8080/hello/{name}\n  ANY /x/{proxy+}  http://127.0.0.1:8080/x/{proxy+}\n\
             worker  provided.al2023  version 4\n"
        );
    }

    #[test]
    fn changes_select_functions_by_code_dir() {
        let root = Path::new("/nonexistent/p");
        let t = targets(root);
        let set = |paths: &[&str]| paths.iter().map(|p| root.join(p)).collect::<BTreeSet<_>>();
        assert_eq!(affected(root, &t, &set(&["api/index.js"])), vec![0]);
        assert_eq!(
            affected(root, &t, &set(&["worker/bootstrap", "api/x/y.js"])),
            vec![0, 1]
        );
        assert_eq!(
            affected(root, &t, &set(&["README.md"])),
            Vec::<usize>::new()
        );
        assert_eq!(affected(root, &t, &set(&["apiary/x"])), Vec::<usize>::new());
        let all: Vec<Target> =
            manifest::parse("[functions.a]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\n")
                .unwrap()
                .into_iter()
                .map(|f| deploy::manifest_target(root, f))
                .collect();
        assert_eq!(affected(root, &all, &set(&["deep/down/file.js"])), vec![0]);
    }

    #[test]
    fn ignored_paths() {
        let f = PathFilter {
            root: "/p".into(),
            data_dir: Some("/data".into()),
        };
        for p in [
            "/p/.nimbus/db",
            "/p/.git/HEAD",
            "/p/api/node_modules/x/y.js",
            "/p/target/debug/x",
            "/data/x",
            "/p/a.js~",
            "/p/.a.js.swp",
        ] {
            assert!(f.ignored(Path::new(p)), "{p}");
        }
        for p in ["/p/nimbus.toml", "/p/api/index.js", "/p/targets/x"] {
            assert!(!f.ignored(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn loopback_for_unspecified() {
        assert_eq!(
            connect_addr("0.0.0.0:9".parse().unwrap()),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            connect_addr("[::]:9".parse().unwrap()),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(
            connect_addr("10.0.0.1:9".parse().unwrap()),
            "10.0.0.1:9".parse().unwrap()
        );
    }
}
