//! Test support: a [`TestDb`] is a schema of its own in the local PostgreSQL (the
//! `NIMBUS_TEST_PG` URL, default `postgres://postgres@127.0.0.1:5432/test`), made for one
//! test and dropped after it, so tests run side by side without seeing each other's rows.
//! PostgreSQL not answering fails the test loudly: the PostgreSQL tests never skip.

use crate::{Pg, PgConfig};

/// The server the tests use.
pub fn url() -> String {
    std::env::var("NIMBUS_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema (`search_path` set to it on every connection) and its pool.
pub struct TestDb {
    pub pg: Pg,
    /// The URL of this schema: hand it to a `nimbus serve --database` under test.
    pub url: String,
    pub schema: String,
    admin: Pg,
}

impl TestDb {
    /// A schema named after `prefix` (letters, digits, `_`) and a random suffix.
    pub fn new(prefix: &str) -> TestDb {
        let base = url();
        let admin = Pg::connect(&PgConfig::new(&base)).unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL tests need a PostgreSQL server: {e}. Start one (CI's .ci/run \
                 does; trust auth, database `test`) or point NIMBUS_TEST_PG at one."
            )
        });
        let schema = format!(
            "t_{}_{:016x}",
            prefix.to_ascii_lowercase(),
            rand::random::<u64>()
        );
        admin
            .with(async |c| {
                c.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
                Ok(())
            })
            .expect("create the test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        let pg = Pg::connect(&PgConfig::new(&url)).expect("connect to the test schema");
        TestDb {
            pg,
            url,
            schema,
            admin,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let _ = self.admin.with(async |c| {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await?;
            Ok(())
        });
    }
}
