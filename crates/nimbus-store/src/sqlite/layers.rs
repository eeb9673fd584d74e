//! [`LayerStore`] on `registry.db` (tables `layers` and `layer_versions`, migration 4).

use super::{check_revision, decode_json, lambda_timestamp, new_revision, SqliteStore};
use crate::layers::{LayerPolicy, LayerStore, LayerVersion, NewLayerVersion};
use crate::{opt_key, Result, StoreError};
use nimbus_core::FunctionConfig;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashSet;

const COLUMNS: &str = "name, version, description, license_info, compatible_runtimes, \
    compatible_architectures, code_sha256, code_size, unzipped_size, created_date";

fn not_found(name: &str, version: u64) -> StoreError {
    StoreError::NotFound(format!(
        "layer version {} not found",
        nimbus_core::arn::layer_arn(name, Some(version))
    ))
}

fn decode(row: &Row<'_>) -> rusqlite::Result<Result<LayerVersion>> {
    let name: String = row.get(0)?;
    let version: i64 = row.get(1)?;
    let runtimes: String = row.get(4)?;
    let archs: String = row.get(5)?;
    let description: String = row.get(2)?;
    let license_info: String = row.get(3)?;
    let code_sha256: String = row.get(6)?;
    let code_size: i64 = row.get(7)?;
    let unzipped_size: i64 = row.get(8)?;
    let created_date: String = row.get(9)?;
    Ok((|| {
        Ok(LayerVersion {
            compatible_runtimes: decode_json("compatible runtimes", &name, &runtimes)?,
            compatible_architectures: decode_json("compatible architectures", &name, &archs)?,
            name,
            version: version as u64,
            description,
            license_info,
            code_sha256,
            code_size: code_size as u64,
            unzipped_size: unzipped_size as u64,
            created_date,
        })
    })())
}

fn find(conn: &Connection, name: &str, version: u64) -> Result<Option<LayerVersion>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM layer_versions WHERE name = ?1 AND version = ?2"),
        params![name, version as i64],
        decode,
    )
    .optional()?
    .transpose()
}

fn policy_of(conn: &Connection, name: &str, version: u64) -> Result<LayerPolicy> {
    let (policy, revision_id): (String, String) = conn
        .query_row(
            "SELECT policy, policy_revision_id FROM layer_versions WHERE name = ?1 AND version = ?2",
            params![name, version as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| not_found(name, version))?;
    Ok(LayerPolicy {
        statements: decode_json("layer policy", name, &policy)?,
        revision_id,
    })
}

fn set_policy(
    tx: &Connection,
    name: &str,
    version: u64,
    statements: &[serde_json::Value],
) -> Result<String> {
    let text = serde_json::to_string(statements)
        .map_err(|e| StoreError::Corrupt(format!("encoding the policy of layer {name}: {e}")))?;
    let revision = new_revision();
    tx.execute(
        "UPDATE layer_versions SET policy = ?3, policy_revision_id = ?4 WHERE name = ?1 AND version = ?2",
        params![name, version as i64, text, revision],
    )?;
    Ok(revision)
}

fn sid(statement: &serde_json::Value) -> Option<&str> {
    statement.get("Sid").and_then(|s| s.as_str())
}

/// Adds to `out` the layer packages every function version names and the merged `/opt`
/// tree ([`opt_key`]) of each one's ordered layer list.
pub(super) fn function_layer_references(
    conn: &Connection,
    out: &mut HashSet<String>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, config FROM functions WHERE config LIKE '%\"layers\"%' \
         UNION ALL SELECT name, config FROM versions WHERE config LIKE '%\"layers\"%'",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (name, config) = row?;
        let config: FunctionConfig = decode_json("config", &name, &config)?;
        if config.layers.is_empty() {
            continue;
        }
        for l in &config.layers {
            out.insert(l.sha256.to_ascii_lowercase());
        }
        out.insert(opt_key(config.layers.iter().map(|l| l.sha256.as_str())));
    }
    Ok(())
}

impl LayerStore for SqliteStore {
    fn publish_layer_version(&self, name: &str, new: &NewLayerVersion) -> Result<LayerVersion> {
        let encode = |what: &str, v: &Vec<String>| {
            serde_json::to_string(v).map_err(|e| {
                StoreError::Corrupt(format!("encoding the {what} of layer {name}: {e}"))
            })
        };
        let runtimes = encode("compatible runtimes", &new.compatible_runtimes)?;
        let archs = encode("compatible architectures", &new.compatible_architectures)?;
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        tx.execute(
            "INSERT INTO layers (name, last_version) VALUES (?1, 0) ON CONFLICT(name) DO NOTHING",
            [name],
        )?;
        let version: i64 = tx.query_row(
            "UPDATE layers SET last_version = last_version + 1 WHERE name = ?1 RETURNING last_version",
            [name],
            |r| r.get(0),
        )?;
        let created = lambda_timestamp(time::OffsetDateTime::now_utc());
        tx.execute(
            "INSERT INTO layer_versions (name, version, description, license_info, \
             compatible_runtimes, compatible_architectures, code_sha256, code_size, \
             unzipped_size, created_date) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                name,
                version,
                new.description,
                new.license_info,
                runtimes,
                archs,
                new.code.sha256,
                new.code.size as i64,
                new.unzipped_size as i64,
                created
            ],
        )?;
        let out =
            find(&tx, name, version as u64)?.ok_or_else(|| not_found(name, version as u64))?;
        tx.commit()?;
        tracing::debug!(layer = name, version, "published layer version");
        Ok(out)
    }

    fn get_layer_version(&self, name: &str, version: u64) -> Result<LayerVersion> {
        find(&self.registry(), name, version)?.ok_or_else(|| not_found(name, version))
    }

    fn list_layer_versions(&self, name: Option<&str>) -> Result<Vec<LayerVersion>> {
        let conn = self.registry();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM layer_versions WHERE ?1 IS NULL OR name = ?1 \
             ORDER BY name, version DESC"
        ))?;
        let rows = stmt.query_map([name], decode)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    fn delete_layer_version(&self, name: &str, version: u64) -> Result<bool> {
        let n = self.registry().execute(
            "DELETE FROM layer_versions WHERE name = ?1 AND version = ?2",
            params![name, version as i64],
        )?;
        Ok(n > 0)
    }

    fn add_layer_permission(
        &self,
        name: &str,
        version: u64,
        statement_id: &str,
        statement: serde_json::Value,
        expected_revision: Option<&str>,
    ) -> Result<(serde_json::Value, String)> {
        let serde_json::Value::Object(mut statement) = statement else {
            return Err(StoreError::InvalidInput(
                "invalid policy statement: send a JSON object".into(),
            ));
        };
        statement.insert("Sid".into(), statement_id.into());
        let statement = serde_json::Value::Object(statement);
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let mut policy = policy_of(&tx, name, version)?;
        let what = format!("the policy of layer {name} version {version}");
        check_revision(expected_revision, &policy.revision_id, &what)?;
        if policy
            .statements
            .iter()
            .any(|s| sid(s) == Some(statement_id))
        {
            return Err(StoreError::Conflict(format!(
                "the statement id ({statement_id}) provided already exists in {what}: use another id or remove that statement first"
            )));
        }
        policy.statements.push(statement.clone());
        let revision = set_policy(&tx, name, version, &policy.statements)?;
        tx.commit()?;
        Ok((statement, revision))
    }

    fn layer_policy(&self, name: &str, version: u64) -> Result<LayerPolicy> {
        policy_of(&self.registry(), name, version)
    }

    fn remove_layer_permission(
        &self,
        name: &str,
        version: u64,
        statement_id: &str,
        expected_revision: Option<&str>,
    ) -> Result<()> {
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let mut policy = policy_of(&tx, name, version)?;
        let what = format!("the policy of layer {name} version {version}");
        check_revision(expected_revision, &policy.revision_id, &what)?;
        let before = policy.statements.len();
        policy.statements.retain(|s| sid(s) != Some(statement_id));
        if policy.statements.len() == before {
            return Err(StoreError::NotFound(format!(
                "statement {statement_id} is not found in {what}"
            )));
        }
        set_policy(&tx, name, version, &policy.statements)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::tests::{both, Backend, TestStore};
    use crate::CodeInfo;
    use nimbus_core::{FunctionName, LayerRef, Runtime};

    fn new(content: &[u8]) -> NewLayerVersion {
        NewLayerVersion {
            description: "d".into(),
            license_info: "MIT".into(),
            compatible_runtimes: vec!["python3.12".into()],
            compatible_architectures: vec![],
            code: CodeInfo::of(content),
            unzipped_size: 7,
        }
    }

    fn versions_are_numbered_never_reused_and_listed_newest_first(b: Backend) {
        let s = TestStore::open(b);
        let v1 = s
            .layers()
            .publish_layer_version("deps", &new(b"a"))
            .unwrap();
        let v2 = s
            .layers()
            .publish_layer_version("deps", &new(b"b"))
            .unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(v1.compatible_runtimes, vec!["python3.12".to_string()]);
        assert!(s.layers().delete_layer_version("deps", 2).unwrap());
        assert!(!s.layers().delete_layer_version("deps", 2).unwrap());
        assert!(s
            .layers()
            .get_layer_version("deps", 2)
            .unwrap_err()
            .is_not_found());
        let v3 = s
            .layers()
            .publish_layer_version("deps", &new(b"c"))
            .unwrap();
        assert_eq!(v3.version, 3);
        s.layers()
            .publish_layer_version("alpha", &new(b"a"))
            .unwrap();
        let all: Vec<_> = s
            .layers()
            .list_layer_versions(None)
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.version))
            .collect();
        assert_eq!(
            all,
            [("alpha".into(), 1), ("deps".into(), 3), ("deps".into(), 1)]
        );
        let s = s.reopen();
        assert_eq!(
            s.layers()
                .publish_layer_version("deps", &new(b"d"))
                .unwrap()
                .version,
            4
        );
    }

    fn layer_packages_stay_referenced_while_a_function_uses_them(b: Backend) {
        let s = TestStore::open(b);
        let v = s
            .layers()
            .publish_layer_version("deps", &new(b"layer"))
            .unwrap();
        assert!(s.code_references().unwrap().contains(&v.code_sha256));
        let mut cfg = FunctionConfig::new(Runtime::parse("python3.12").unwrap(), "app.handler");
        cfg.layers.push(LayerRef {
            arn: nimbus_core::arn::layer_arn("deps", Some(1)),
            sha256: v.code_sha256.clone(),
            code_size: 5,
            unzipped_size: 7,
        });
        let f = FunctionName::parse("f").unwrap();
        s.deploy(&f, &cfg, &CodeInfo::of(b"code")).unwrap();
        s.layers().delete_layer_version("deps", 1).unwrap();
        let refs = s.code_references().unwrap();
        assert!(refs.contains(&v.code_sha256));
        assert!(refs.contains(&opt_key([v.code_sha256.as_str()])));
        s.delete(&f).unwrap();
        assert!(!s.code_references().unwrap().contains(&v.code_sha256));
    }

    fn permissions_round_trip_with_revisions(b: Backend) {
        let s = TestStore::open(b);
        s.layers()
            .publish_layer_version("deps", &new(b"a"))
            .unwrap();
        let st = serde_json::json!({"Effect": "Allow", "Action": "lambda:GetLayerVersion"});
        let (stored, rev) = s
            .layers()
            .add_layer_permission("deps", 1, "s1", st.clone(), None)
            .unwrap();
        assert_eq!(stored["Sid"], "s1");
        assert!(s
            .layers()
            .add_layer_permission("deps", 1, "s1", st.clone(), None)
            .unwrap_err()
            .is_conflict());
        assert!(s
            .layers()
            .add_layer_permission("deps", 1, "s2", st.clone(), Some("stale"))
            .unwrap_err()
            .is_precondition_failed());
        let p = s.layers().layer_policy("deps", 1).unwrap();
        assert_eq!(
            (p.statements.len(), p.revision_id.as_str()),
            (1, rev.as_str())
        );
        s.layers()
            .remove_layer_permission("deps", 1, "s1", Some(&rev))
            .unwrap();
        assert!(s
            .layers()
            .remove_layer_permission("deps", 1, "s1", None)
            .unwrap_err()
            .is_not_found());
        assert!(s
            .layers()
            .layer_policy("deps", 9)
            .unwrap_err()
            .is_not_found());
    }

    both!(
        versions_are_numbered_never_reused_and_listed_newest_first,
        layer_packages_stay_referenced_while_a_function_uses_them,
        permissions_round_trip_with_revisions,
    );
}
