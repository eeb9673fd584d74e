//! Lambda layers (`/2018-10-31/layers/…`): PublishLayerVersion, GetLayerVersion(ByArn),
//! ListLayers, ListLayerVersions, DeleteLayerVersion and the layer version permissions,
//! plus what functions need of them: resolving `Layers` ARNs to the content they pin
//! ([`resolve`]) and the combined size check ([`check_size`]). Shapes follow
//! `../shared/aws-reference-wave2.md` ("Layers"). The registry side is
//! [`nimbus_store::LayerStore`]; the zips live in the code store like function code.

use crate::lambda_api::{blocking, first, hex_to_b64, parse_body, parse_query, Query};
use crate::lambda_fields::HOST_ARCHITECTURE;
use crate::{ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use nimbus_core::{arn, FunctionConfig, LayerRef, Limits, Runtime};
use nimbus_store::{CodePin, LayerVersion, NewLayerVersion};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Lambda's limits on PublishLayerVersion's fields.
const RUNTIMES_MAX: usize = 15;
const ARCHITECTURES_MAX: usize = 2;
const LICENSE_MAX: usize = 512;

/// The layer name in a path: a name or the layer's ARN (`…:layer:NAME`).
fn layer_name(raw: &str) -> Result<String, ApiError> {
    let name = match raw.strip_prefix("arn:") {
        Some(_) => match raw.split(':').collect::<Vec<_>>().as_slice() {
            ["arn", _, "lambda", _, _, "layer", name] => (*name).to_string(),
            _ => {
                return Err(ApiError::InvalidParameter(format!(
                    "{raw:?} is not a layer name or layer ARN"
                )))
            }
        },
        None => raw.to_string(),
    };
    arn::validate_layer_name(&name)?;
    Ok(name)
}

fn version_number(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>()
        .ok()
        .filter(|v| *v >= 1 && raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!("VersionNumber {raw:?} must be a positive integer"))
        })
}

/// Where the zip of a layer version can be downloaded (Lambda's presigned S3 URL).
fn location(gw: &Gateway, v: &LayerVersion) -> String {
    format!(
        "{}/v1/layers/{}/versions/{}/content",
        gw.cfg.public_url.trim_end_matches('/'),
        v.name,
        v.version
    )
}

/// `LayerVersionsListItem`: a version without its content.
fn list_item(v: &LayerVersion) -> Value {
    let mut out = json!({
        "LayerVersionArn": arn::layer_arn(&v.name, Some(v.version)),
        "Version": v.version,
        "Description": v.description,
        "CreatedDate": v.created_date,
        "CompatibleRuntimes": v.compatible_runtimes,
        "CompatibleArchitectures": v.compatible_architectures,
    });
    if !v.license_info.is_empty() {
        out["LicenseInfo"] = v.license_info.clone().into();
    }
    out
}

/// PublishLayerVersion's and GetLayerVersion's answer.
fn version_json(gw: &Gateway, v: &LayerVersion) -> Value {
    let mut out = list_item(v);
    out["LayerArn"] = arn::layer_arn(&v.name, None).into();
    out["Content"] = json!({
        "Location": location(gw, v),
        "CodeSha256": hex_to_b64(&v.code_sha256),
        "CodeSize": v.code_size,
    });
    out
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ContentInput {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    s3_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PublishInput {
    content: Option<ContentInput>,
    description: Option<String>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
    license_info: Option<String>,
}

fn check_publish(input: &PublishInput) -> Result<(), ApiError> {
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > Limits::DESCRIPTION_MAX)
    {
        return Err(ApiError::InvalidParameter(format!(
            "Description must be at most {} characters",
            Limits::DESCRIPTION_MAX
        )));
    }
    if input
        .license_info
        .as_ref()
        .is_some_and(|l| l.chars().count() > LICENSE_MAX)
    {
        return Err(ApiError::InvalidParameter(format!(
            "LicenseInfo must be at most {LICENSE_MAX} characters"
        )));
    }
    let runtimes = input.compatible_runtimes.as_deref().unwrap_or_default();
    if runtimes.len() > RUNTIMES_MAX {
        return Err(ApiError::InvalidParameter(format!(
            "CompatibleRuntimes may name at most {RUNTIMES_MAX} runtimes"
        )));
    }
    for r in runtimes {
        Runtime::parse(r)?;
    }
    let archs = input
        .compatible_architectures
        .as_deref()
        .unwrap_or_default();
    if archs.len() > ARCHITECTURES_MAX {
        return Err(ApiError::InvalidParameter(format!(
            "CompatibleArchitectures may name at most {ARCHITECTURES_MAX} architectures"
        )));
    }
    if let Some(a) = archs
        .iter()
        .find(|a| !matches!(a.as_str(), "x86_64" | "arm64"))
    {
        return Err(ApiError::InvalidParameter(format!(
            "CompatibleArchitectures: {a:?} is not an architecture: use x86_64 or arm64"
        )));
    }
    Ok(())
}

/// `POST /2018-10-31/layers/{name}/versions` (PublishLayerVersion, 201)
pub(crate) async fn publish(
    State(gw): State<Arc<Gateway>>,
    Path(layer): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = layer_name(&layer)?;
    let input: PublishInput = parse_body(&body)?;
    drop(body);
    check_publish(&input)?;
    let content = input
        .content
        .as_ref()
        .ok_or_else(|| ApiError::InvalidParameter("Content is required".into()))?;
    if content.s3_bucket.is_some() || content.s3_key.is_some() {
        return Err(ApiError::InvalidParameter(
            "only Content.ZipFile is supported: Nimbus has no S3; upload the zip inline".into(),
        ));
    }
    let zip = base64::engine::general_purpose::STANDARD
        .decode(
            content
                .zip_file
                .as_deref()
                .ok_or_else(|| ApiError::InvalidParameter("Content.ZipFile is required".into()))?
                .as_bytes(),
        )
        .map_err(|e| {
            ApiError::InvalidParameter(format!("Content.ZipFile is not valid base64: {e}"))
        })?;
    // Stored and extracted like function code (zip-slip, symlink, size and zip-bomb
    // checks), pinned until the layer version naming it is committed.
    let code = gw.code.clone();
    let (pinned, unzipped) = blocking(move || {
        let pinned = code.put(&zip)?;
        let unzipped = code.unzipped_size(&pinned.info.sha256)?;
        Ok((pinned, unzipped))
    })
    .await?;
    let new = NewLayerVersion {
        description: input.description.unwrap_or_default(),
        license_info: input.license_info.unwrap_or_default(),
        compatible_runtimes: input.compatible_runtimes.unwrap_or_default(),
        compatible_architectures: input.compatible_architectures.unwrap_or_default(),
        code: pinned.info.clone(),
        unzipped_size: unzipped,
    };
    let (store, n) = (gw.store.clone(), name.clone());
    let published = blocking(move || {
        let v = store.layers().publish_layer_version(&n, &new);
        drop(pinned.pin);
        v
    })
    .await;
    if published.is_err() {
        gw.collect_code_soon();
    }
    let v = published?;
    tracing::info!(layer = %name, version = v.version, size = v.code_size, "published layer version");
    Ok((StatusCode::CREATED, Json(version_json(&gw, &v))).into_response())
}

/// `GET /2018-10-31/layers/{name}/versions/{version}` (GetLayerVersion)
pub(crate) async fn get_version(
    State(gw): State<Arc<Gateway>>,
    Path((layer, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (name, version) = (layer_name(&layer)?, version_number(&version)?);
    let v = gw.store.layers().get_layer_version(&name, version)?;
    Ok(Json(version_json(&gw, &v)))
}

/// `GET /2018-10-31/layers` : ListLayers, or GetLayerVersionByArn with
/// `?find=LayerVersion&Arn=…`.
pub(crate) async fn list_or_find(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    match first(&q, "find") {
        Some("LayerVersion") => {
            let a = first(&q, "Arn")
                .ok_or_else(|| ApiError::InvalidParameter("Arn is required".into()))?;
            let (name, version) = arn::parse_layer_version_arn(a)?;
            let v = gw.store.layers().get_layer_version(&name, version)?;
            Ok(Json(version_json(&gw, &v)))
        }
        Some(other) => Err(ApiError::InvalidParameter(format!(
            "find={other:?} is not supported: use find=LayerVersion"
        ))),
        None => list_layers(&gw, &q).await,
    }
}

/// Whether `v` passes ListLayers'/ListLayerVersions' `CompatibleRuntime` and
/// `CompatibleArchitecture` filters.
fn matches_filters(v: &LayerVersion, q: &Query) -> bool {
    let runtime = first(q, "CompatibleRuntime");
    let arch = first(q, "CompatibleArchitecture");
    runtime.is_none_or(|r| v.compatible_runtimes.iter().any(|x| x == r))
        && arch.is_none_or(|a| v.compatible_architectures.iter().any(|x| x == a))
}

fn check_filters(q: &Query) -> Result<(), ApiError> {
    if let Some(r) = first(q, "CompatibleRuntime") {
        Runtime::parse(r)?;
    }
    if let Some(a) = first(q, "CompatibleArchitecture") {
        if !matches!(a, "x86_64" | "arm64") {
            return Err(ApiError::InvalidParameter(format!(
                "CompatibleArchitecture {a:?} is not an architecture: use x86_64 or arm64"
            )));
        }
    }
    Ok(())
}

async fn list_layers(gw: &Arc<Gateway>, q: &Query) -> Result<Json<Value>, ApiError> {
    check_filters(q)?;
    let store = gw.store.clone();
    let all = blocking(move || store.layers().list_layer_versions(None)).await?;
    // Newest matching version of each layer (the store lists each layer newest first).
    let mut latest: Vec<LayerVersion> = Vec::new();
    for v in all.into_iter().filter(|v| matches_filters(v, q)) {
        if latest.last().is_none_or(|l| l.name != v.name) {
            latest.push(v);
        }
    }
    let (page, next) = crate::lambda_api::paginate(latest, q, |v| v.name.clone())?;
    let layers: Vec<Value> = page
        .iter()
        .map(|v| {
            json!({
                "LayerName": v.name,
                "LayerArn": arn::layer_arn(&v.name, None),
                "LatestMatchingVersion": list_item(v),
            })
        })
        .collect();
    let mut out = json!({ "Layers": layers });
    if let Some(n) = next {
        out["NextMarker"] = n.into();
    }
    Ok(Json(out))
}

/// `GET /2018-10-31/layers/{name}/versions` (ListLayerVersions, newest first)
pub(crate) async fn list_versions(
    State(gw): State<Arc<Gateway>>,
    Path(layer): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    check_filters(&q)?;
    let name = layer_name(&layer)?;
    let store = gw.store.clone();
    let versions = blocking(move || store.layers().list_layer_versions(Some(&name))).await?;
    let versions: Vec<LayerVersion> = versions
        .into_iter()
        .filter(|v| matches_filters(v, &q))
        .collect();
    // Newest first: the sort key makes a larger version sort first.
    let (page, next) =
        crate::lambda_api::paginate(versions, &q, |v| format!("{:020}", u64::MAX - v.version))?;
    let mut out = json!({ "LayerVersions": page.iter().map(list_item).collect::<Vec<_>>() });
    if let Some(n) = next {
        out["NextMarker"] = n.into();
    }
    Ok(Json(out))
}

/// `DELETE /2018-10-31/layers/{name}/versions/{version}` (DeleteLayerVersion, 204 even when
/// it does not exist, as Lambda). Functions that use it keep its content.
pub(crate) async fn delete_version(
    State(gw): State<Arc<Gateway>>,
    Path((layer, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (name, version) = (layer_name(&layer)?, version_number(&version)?);
    let (store, n) = (gw.store.clone(), name.clone());
    let deleted = blocking(move || store.layers().delete_layer_version(&n, version)).await?;
    if deleted {
        tracing::info!(layer = %name, version, "deleted layer version");
        gw.collect_code_soon();
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PermissionInput {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    organization_id: Option<String>,
    revision_id: Option<String>,
}

/// The statement Lambda stores for AddLayerVersionPermission.
fn layer_statement(input: &PermissionInput, resource: &str) -> Result<(String, Value), ApiError> {
    let sid = input
        .statement_id
        .clone()
        .ok_or_else(|| ApiError::InvalidParameter("StatementId is required".into()))?;
    if sid.is_empty()
        || sid.len() > 100
        || !sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::InvalidParameter(
            "StatementId must be 1-100 letters, digits, '-' or '_'".into(),
        ));
    }
    let action = input
        .action
        .as_deref()
        .ok_or_else(|| ApiError::InvalidParameter("Action is required".into()))?;
    if action != "lambda:GetLayerVersion" {
        return Err(ApiError::InvalidParameter(format!(
            "Action {action:?} is not allowed: layer version permissions grant lambda:GetLayerVersion"
        )));
    }
    let principal = input
        .principal
        .as_deref()
        .ok_or_else(|| ApiError::InvalidParameter("Principal is required".into()))?;
    let account = |a: &str| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit());
    let principal = if principal == "*" {
        json!("*")
    } else if account(principal) {
        json!({ "AWS": format!("arn:aws:iam::{principal}:root") })
    } else if principal
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.strip_suffix(":root"))
        .is_some_and(account)
    {
        json!({ "AWS": principal })
    } else {
        return Err(ApiError::InvalidParameter(format!(
            "Principal {principal:?} must be *, an account id or arn:aws:iam::ACCOUNT:root"
        )));
    };
    let mut statement = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": action,
        "Resource": resource,
    });
    if let Some(org) = &input.organization_id {
        statement["Condition"] = json!({ "StringEquals": { "aws:PrincipalOrgID": org } });
    }
    Ok((sid, statement))
}

/// `POST /2018-10-31/layers/{name}/versions/{version}/policy` (AddLayerVersionPermission, 201)
pub(crate) async fn add_permission(
    State(gw): State<Arc<Gateway>>,
    Path((layer, version)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = parse_query(raw)?;
    let (name, version) = (layer_name(&layer)?, version_number(&version)?);
    let input: PermissionInput = parse_body(&body)?;
    let resource = arn::layer_arn(&name, Some(version));
    let (sid, statement) = layer_statement(&input, &resource)?;
    let revision = first(&q, "RevisionId")
        .map(str::to_string)
        .or(input.revision_id);
    let store = gw.store.clone();
    let (stored, revision) = blocking(move || {
        store
            .layers()
            .add_layer_permission(&name, version, &sid, statement, revision.as_deref())
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Statement": stored.to_string(), "RevisionId": revision })),
    )
        .into_response())
}

/// `GET /2018-10-31/layers/{name}/versions/{version}/policy` (GetLayerVersionPolicy)
pub(crate) async fn get_policy(
    State(gw): State<Arc<Gateway>>,
    Path((layer, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (name, version) = (layer_name(&layer)?, version_number(&version)?);
    let p = gw.store.layers().layer_policy(&name, version)?;
    crate::lambda_api::policy_reply(
        &p.statements,
        &p.revision_id,
        "No policy is associated with the given resource.",
    )
}

/// `DELETE /2018-10-31/layers/{name}/versions/{version}/policy/{sid}`
/// (RemoveLayerVersionPermission, 204)
pub(crate) async fn remove_permission(
    State(gw): State<Arc<Gateway>>,
    Path((layer, version, sid)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = parse_query(raw)?;
    let (name, version) = (layer_name(&layer)?, version_number(&version)?);
    let revision = first(&q, "RevisionId").map(str::to_string);
    let store = gw.store.clone();
    blocking(move || {
        store
            .layers()
            .remove_layer_permission(&name, version, &sid, revision.as_deref())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/layers/{name}/versions/{version}/content`: the zip of a layer version (its
/// `Content.Location`).
pub(crate) async fn content(
    State(gw): State<Arc<Gateway>>,
    Path((layer, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (name, version) = (layer_name(&layer)?, version_number(&version)?);
    let v = gw.store.layers().get_layer_version(&name, version)?;
    let code = gw.code.clone();
    let zip = blocking(move || code.zip_bytes(&v.code_sha256)).await?;
    Ok(([("content-type", "application/zip")], zip).into_response())
}

/// Resolves a function's `Layers` (layer version ARNs, in order) to the content each pins,
/// refusing what Lambda refuses: more than five, an unknown or deleted version, the same
/// layer twice, a layer whose `CompatibleRuntimes` leaves out `runtime`. The returned pins
/// hold the layers' packages until the caller has committed the function.
pub(crate) async fn resolve(
    gw: &Arc<Gateway>,
    arns: &[String],
    runtime: &Runtime,
) -> Result<(Vec<LayerRef>, Vec<CodePin>), ApiError> {
    if arns.len() > Limits::LAYERS_MAX {
        return Err(ApiError::InvalidParameter(format!(
            "Cannot reference more than {} layers.",
            Limits::LAYERS_MAX
        )));
    }
    let mut refs = Vec::with_capacity(arns.len());
    let mut pins = Vec::with_capacity(arns.len());
    let mut names: Vec<String> = Vec::new();
    for a in arns {
        let (name, version) = arn::parse_layer_version_arn(a)?;
        if names.contains(&name) {
            return Err(ApiError::InvalidParameter(format!(
                "Two different versions of the same layer are not allowed to be referenced in the same function: {name}"
            )));
        }
        // Pinned before it is read: a delete and collection meanwhile cannot take it.
        let v = match gw.store.layers().get_layer_version(&name, version) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => {
                return Err(ApiError::InvalidParameter(format!(
                    "Layer version {} does not exist.",
                    arn::layer_arn(&name, Some(version))
                )))
            }
            Err(e) => return Err(e.into()),
        };
        pins.push(gw.code.pin(&v.code_sha256)?);
        // In a cluster this may fetch the package from the shared store: off the async
        // workers.
        let (code, sha) = (gw.code.clone(), v.code_sha256.clone());
        if !blocking(move || Ok::<_, nimbus_store::StoreError>(code.contains(&sha))).await? {
            return Err(ApiError::InvalidParameter(format!(
                "Layer version {} does not exist.",
                arn::layer_arn(&name, Some(version))
            )));
        }
        if !v.compatible_runtimes.is_empty()
            && !v.compatible_runtimes.iter().any(|r| r == runtime.as_str())
        {
            return Err(ApiError::InvalidParameter(format!(
                "Layer version {} is not compatible with runtime {}: its CompatibleRuntimes are {}",
                arn::layer_arn(&name, Some(version)),
                runtime.as_str(),
                v.compatible_runtimes.join(", ")
            )));
        }
        if !v.compatible_architectures.is_empty()
            && !v
                .compatible_architectures
                .iter()
                .any(|a| a == HOST_ARCHITECTURE)
        {
            return Err(ApiError::InvalidParameter(format!(
                "Layer version {} is not compatible with architecture {HOST_ARCHITECTURE}",
                arn::layer_arn(&name, Some(version)),
            )));
        }
        names.push(name.clone());
        refs.push(LayerRef {
            arn: arn::layer_arn(&name, Some(version)),
            sha256: v.code_sha256,
            code_size: v.code_size,
            unzipped_size: v.unzipped_size,
        });
    }
    Ok((refs, pins))
}

/// Refuses a function whose code and layers together unzip to more than Lambda's 250 MB.
pub(crate) async fn check_size(
    gw: &Arc<Gateway>,
    config: &FunctionConfig,
    code_sha256: &str,
) -> Result<(), ApiError> {
    if config.layers.is_empty() {
        return Ok(());
    }
    let (code, sha) = (gw.code.clone(), code_sha256.to_string());
    let code_bytes = blocking(move || code.unzipped_size(&sha)).await?;
    let total = code_bytes + config.layers.iter().map(|l| l.unzipped_size).sum::<u64>();
    if total > Limits::CODE_UNZIPPED_MAX {
        return Err(ApiError::InvalidParameter(format!(
            "Function code combined with layers exceeds the maximum allowed size of {} bytes. The actual size is {total} bytes.",
            Limits::CODE_UNZIPPED_MAX
        )));
    }
    Ok(())
}

/// Lambda's `Layers` of a function configuration: `[{Arn, CodeSize}]`.
pub(crate) fn config_layers(config: &FunctionConfig) -> Value {
    config
        .layers
        .iter()
        .map(|l| json!({ "Arn": l.arn, "CodeSize": l.code_size }))
        .collect()
}
