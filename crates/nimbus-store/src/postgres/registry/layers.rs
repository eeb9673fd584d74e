//! [`LayerStore`] on the `registry` component (tables `registry_layers` and
//! `registry_layer_versions`). A layer's number comes from `UPDATE … SET last_version =
//! last_version + 1 RETURNING`, which locks the layer's row: two nodes publishing the same
//! layer at once get consecutive numbers.

use super::{
    check_revision, decode_json, execute, get, lambda_timestamp, new_revision, query, query_one,
    query_opt, PgStore,
};
use crate::layers::{LayerPolicy, LayerStore, LayerVersion, NewLayerVersion};
use crate::{opt_key, Result, StoreError};
use nimbus_core::FunctionConfig;
use nimbus_pg::{Row, Transaction};
use std::collections::HashSet;

const COLUMNS: &str = "name, version, description, license_info, compatible_runtimes, \
    compatible_architectures, code_sha256, code_size, unzipped_size, created_date";

fn not_found(name: &str, version: u64) -> StoreError {
    StoreError::NotFound(format!(
        "layer version {} not found",
        nimbus_core::arn::layer_arn(name, Some(version))
    ))
}

fn decode(row: &Row) -> Result<LayerVersion> {
    let name: String = get(row, 0)?;
    let runtimes: String = get(row, 4)?;
    let archs: String = get(row, 5)?;
    Ok(LayerVersion {
        compatible_runtimes: decode_json("compatible runtimes", &name, &runtimes)?,
        compatible_architectures: decode_json("compatible architectures", &name, &archs)?,
        version: get::<i64>(row, 1)? as u64,
        description: get(row, 2)?,
        license_info: get(row, 3)?,
        code_sha256: get(row, 6)?,
        code_size: get::<i64>(row, 7)? as u64,
        unzipped_size: get::<i64>(row, 8)? as u64,
        created_date: get(row, 9)?,
        name,
    })
}

async fn find(tx: &Transaction<'_>, name: &str, version: u64) -> Result<Option<LayerVersion>> {
    query_opt(
        tx,
        &format!("SELECT {COLUMNS} FROM registry_layer_versions WHERE name = $1 AND version = $2"),
        &[&name, &(version as i64)],
    )
    .await?
    .map(|r| decode(&r))
    .transpose()
}

/// The version's policy; with `lock`, its row stays locked until the transaction ends.
async fn policy_of(
    tx: &Transaction<'_>,
    name: &str,
    version: u64,
    lock: bool,
) -> Result<LayerPolicy> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = query_opt(
        tx,
        &format!(
            "SELECT policy, policy_revision_id FROM registry_layer_versions \
             WHERE name = $1 AND version = $2{lock}"
        ),
        &[&name, &(version as i64)],
    )
    .await?
    .ok_or_else(|| not_found(name, version))?;
    let policy: String = get(&row, 0)?;
    Ok(LayerPolicy {
        statements: decode_json("layer policy", name, &policy)?,
        revision_id: get(&row, 1)?,
    })
}

async fn set_policy(
    tx: &Transaction<'_>,
    name: &str,
    version: u64,
    statements: &[serde_json::Value],
) -> Result<String> {
    let text = serde_json::to_string(statements)
        .map_err(|e| StoreError::Corrupt(format!("encoding the policy of layer {name}: {e}")))?;
    let revision = new_revision();
    execute(
        tx,
        "UPDATE registry_layer_versions SET policy = $3, policy_revision_id = $4 \
         WHERE name = $1 AND version = $2",
        &[&name, &(version as i64), &text, &revision],
    )
    .await?;
    Ok(revision)
}

fn sid(statement: &serde_json::Value) -> Option<&str> {
    statement.get("Sid").and_then(|s| s.as_str())
}

/// Adds to `out` the layer packages every function version names and the merged `/opt`
/// tree ([`opt_key`]) of each one's ordered layer list.
pub(super) async fn function_layer_references(
    tx: &Transaction<'_>,
    out: &mut HashSet<String>,
) -> Result<()> {
    let rows = query(
        tx,
        "SELECT name, config FROM registry_functions WHERE config LIKE '%\"layers\"%' \
         UNION ALL SELECT name, config FROM registry_versions WHERE config LIKE '%\"layers\"%'",
        &[],
    )
    .await?;
    for row in &rows {
        let name: String = get(row, 0)?;
        let config: String = get(row, 1)?;
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

impl LayerStore for PgStore {
    fn publish_layer_version(&self, name: &str, new: &NewLayerVersion) -> Result<LayerVersion> {
        let encode = |what: &str, v: &Vec<String>| {
            serde_json::to_string(v).map_err(|e| {
                StoreError::Corrupt(format!("encoding the {what} of layer {name}: {e}"))
            })
        };
        let runtimes = encode("compatible runtimes", &new.compatible_runtimes)?;
        let archs = encode("compatible architectures", &new.compatible_architectures)?;
        let created = lambda_timestamp(time::OffsetDateTime::now_utc());
        let out = self.tx(async |tx| {
            execute(
                tx,
                "INSERT INTO registry_layers (name, last_version) VALUES ($1, 0) \
                 ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .await?;
            let version: i64 = get(
                &query_one(
                    tx,
                    "UPDATE registry_layers SET last_version = last_version + 1 WHERE name = $1 \
                     RETURNING last_version",
                    &[&name],
                )
                .await?,
                0,
            )?;
            execute(
                tx,
                "INSERT INTO registry_layer_versions (name, version, description, license_info, \
                 compatible_runtimes, compatible_architectures, code_sha256, code_size, \
                 unzipped_size, created_date) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &name,
                    &version,
                    &new.description,
                    &new.license_info,
                    &runtimes,
                    &archs,
                    &new.code.sha256,
                    &(new.code.size as i64),
                    &(new.unzipped_size as i64),
                    &created,
                ],
            )
            .await?;
            find(tx, name, version as u64)
                .await?
                .ok_or_else(|| not_found(name, version as u64))
        })?;
        tracing::debug!(
            layer = name,
            version = out.version,
            "published layer version"
        );
        Ok(out)
    }

    fn get_layer_version(&self, name: &str, version: u64) -> Result<LayerVersion> {
        self.tx(async |tx| find(tx, name, version).await)?
            .ok_or_else(|| not_found(name, version))
    }

    fn list_layer_versions(&self, name: Option<&str>) -> Result<Vec<LayerVersion>> {
        self.tx(async |tx| {
            query(
                tx,
                &format!(
                    "SELECT {COLUMNS} FROM registry_layer_versions \
                     WHERE $1::TEXT IS NULL OR name = $1 ORDER BY name, version DESC"
                ),
                &[&name],
            )
            .await?
            .iter()
            .map(decode)
            .collect()
        })
    }

    fn delete_layer_version(&self, name: &str, version: u64) -> Result<bool> {
        self.tx(async |tx| {
            let n = execute(
                tx,
                "DELETE FROM registry_layer_versions WHERE name = $1 AND version = $2",
                &[&name, &(version as i64)],
            )
            .await?;
            Ok(n > 0)
        })
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
        self.tx(async |tx| {
            let mut policy = policy_of(tx, name, version, true).await?;
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
            let revision = set_policy(tx, name, version, &policy.statements).await?;
            Ok((statement, revision))
        })
    }

    fn layer_policy(&self, name: &str, version: u64) -> Result<LayerPolicy> {
        self.tx(async |tx| policy_of(tx, name, version, false).await)
    }

    fn remove_layer_permission(
        &self,
        name: &str,
        version: u64,
        statement_id: &str,
        expected_revision: Option<&str>,
    ) -> Result<()> {
        self.tx(async |tx| {
            let mut policy = policy_of(tx, name, version, true).await?;
            let what = format!("the policy of layer {name} version {version}");
            check_revision(expected_revision, &policy.revision_id, &what)?;
            let before = policy.statements.len();
            policy.statements.retain(|s| sid(s) != Some(statement_id));
            if policy.statements.len() == before {
                return Err(StoreError::NotFound(format!(
                    "statement {statement_id} is not found in {what}"
                )));
            }
            set_policy(tx, name, version, &policy.statements).await?;
            Ok(())
        })
    }
}
