//! A private PostgreSQL server for tests that restart the server or need other settings
//! (`wal_level`), so the machine's shared cluster is never touched: `initdb` into a
//! temporary directory owned by `postgres`, started by `pg_ctl` on a free port.

use std::path::PathBuf;
use std::process::Command;

pub struct PgInstance {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The directory of PostgreSQL's server programs (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> PathBuf {
    let root = std::path::Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("PostgreSQL's server programs are not installed ({root:?}: {e}): apt-get install postgresql"))
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql")
}

/// Runs a PostgreSQL program as the `postgres` user (initdb refuses root).
fn as_postgres(bin: &std::path::Path, program: &str, args: &[&str]) {
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    let out = cmd.args(args).output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgInstance {
    /// A new server with `wal_level` set as given, trust authentication, database `test`.
    pub fn start(wal_level: &str) -> PgInstance {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("nimbus-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a postgres user");
            nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).unwrap();
        }
        let data = dir.path().join("data");
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let port = crate::free_port();
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = {wal_level}\nfsync = off\nmax_replication_slots = 10\nmax_wal_senders = 10\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let me = PgInstance { port, dir, bin };
        me.ctl("start");
        let db = crate::brokers::Pg::connect_to(&format!(
            "postgres://postgres@127.0.0.1:{port}/postgres"
        ));
        db.exec("CREATE DATABASE test");
        me
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-m",
                "fast",
                action,
            ],
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/test`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test", self.port)
    }

    pub fn restart(&self) {
        self.ctl("restart");
    }

    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Starts it again after [`PgInstance::stop`].
    pub fn start_again(&self) {
        self.ctl("start");
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = std::panic::catch_unwind(|| self.ctl("stop"));
        }
    }
}
