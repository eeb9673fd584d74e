//! `nimbus migrate --from DATA_DIR --to postgres://…`: moves a stopped single node's data
//! into a cluster's database ([`nimbus_server::migrate`]); progress on stderr, then a
//! summary and what to do next on stdout.

use crate::cli::MigrateArgs;
use anyhow::{Context, Result};
use nimbus_server::migrate::{human_bytes, MigrateOptions, MigrateReport};

pub async fn run(args: MigrateArgs, json: bool) -> Result<()> {
    let opts = MigrateOptions {
        from: args.from,
        to: args.to,
        master_key_file: args.master_key_file,
    };
    let report = tokio::task::spawn_blocking(move || {
        nimbus_server::migrate::run(&opts, &|line| eprintln!("{line}"))
    })
    .await
    .context("the migration stopped")??;
    if json {
        return super::print_json(&to_json(&report));
    }
    super::print(summary(&report))
}

fn to_json(r: &MigrateReport) -> serde_json::Value {
    serde_json::json!({
        "target": r.target,
        "rows": r.rows(),
        "stores": r.stores.iter().map(|(store, tables)| serde_json::json!({
            "store": store,
            "tables": tables.iter().map(|(what, n)| serde_json::json!({"what": what, "rows": n}))
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "codePackages": {"count": r.code_blobs, "bytes": r.code_bytes},
        "objectBlobs": {"count": r.object_blobs, "bytes": r.object_bytes},
        "masterKeyId": r.master_key_id,
        "masterKeySource": r.master_key_source,
    })
}

fn summary(r: &MigrateReport) -> String {
    format!(
        "moved {} rows of {} stores, {} code packages ({}) and {} object blobs ({}) into \
         PostgreSQL at {}.\n\
         \n\
         Next:\n\
         \x20 1. Start each node on the database, with an empty data dir of its own:\n\
         \x20      nimbus serve --database 'postgres://…' --data-dir /var/lib/nimbus …\n\
         \x20 2. Give every node the SAME master key, the one the secrets are sealed with\n\
         \x20    (id {}, from {}): copy that key file to each node (mode 0600,\n\
         \x20    --master-key-file) or set NIMBUS_MASTER_KEY. A node with another key is refused.\n\
         \x20 3. Access keys moved with the rest: the CLI's credentials file of the old data dir\n\
         \x20    (DATA_DIR/credentials) still works against the cluster.\n\
         \x20 Keep the old data dir until the cluster serves; do not start its server again\n\
         \x20 (its data now lives in the cluster).\n",
        r.rows(),
        r.stores.len(),
        r.code_blobs,
        human_bytes(r.code_bytes),
        r.object_blobs,
        human_bytes(r.object_bytes),
        r.target,
        r.master_key_id,
        r.master_key_source,
    )
}
