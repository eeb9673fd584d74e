//! `nimbus migrate`: a single node (SQLite) moved into PostgreSQL, then served by a node
//! on that database with an empty data dir of its own, which fetches the function's code
//! from the shared blob store and answers as the single node did.

use nimbus_tests::*;
use serde_json::json;

#[test]
fn a_single_node_moves_into_a_cluster_database_and_answers_the_same() {
    // The single node, on SQLite whatever NIMBUS_TEST_BACKEND says.
    let mut single = Server::start(&[]);
    if single.database.is_some() {
        let own = single.database.take();
        single.restart();
        drop(own);
    }
    single.deploy(
        "greet",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async (e) => ({ hello: e.name, from: 'the single node' });",
        )],
    );
    let before = single.invoke("greet", r#"{"name":"ada"}"#).ok();
    assert_eq!(before, json!({"hello": "ada", "from": "the single node"}));

    let db = nimbus_pg::testing::TestDb::new("migrate_e2e");
    let data = single.data_path();
    let url = db.url.clone();
    let migrate = || {
        std::process::Command::new(nimbus_bin())
            .arg("migrate")
            .arg("--from")
            .arg(&data)
            .args(["--to", &url])
            .env_remove("NIMBUS_MASTER_KEY")
            .env_remove("NIMBUS_MASTER_KEY_FILE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // Refused while the server runs.
    let out = migrate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is in use") && stderr.contains(&single.pid().to_string()),
        "{stderr}"
    );

    assert!(single.terminate().success(), "{}", single.log());
    let out = migrate();
    let stdout = cli_ok(&out).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("registry: 1 functions"), "{stderr}");
    assert!(stdout.contains("SAME master key"), "{stdout}");

    // A node on the database, with an empty data dir and the single node's master key.
    let key = data.join("master.key");
    let mut node = Server::start(&["--master-key-file", key.to_str().unwrap()]);
    let own = node.database.replace(db);
    node.restart();
    drop(own);
    let after = node.invoke("greet", r#"{"name":"ada"}"#).ok();
    assert_eq!(after, before);

    // A second migration into the database now in use is refused.
    let out = migrate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("already holds Nimbus data"),
        "{stderr}"
    );
}
