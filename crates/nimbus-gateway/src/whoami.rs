//! `GET /v1/whoami`: the signing key and what its policy allows, for clients (the web
//! console) deciding which write buttons to show. Any valid key may ask; the answer holds no
//! secret. The server still checks every request: this only spares a user buttons that
//! would answer 403.

use crate::auth::{self, Caller, Check};
use crate::{ApiError, Gateway};
use axum::extract::{Query, State};
use axum::{Extension, Json};
use nimbus_core::arn::{self, ACCOUNT, REGION};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The resource kinds actions act on.
enum On {
    /// No particular resource (`*`).
    Nothing,
    Function,
    Queue,
    Bus,
    Alarm,
}

/// Every action the console's pages need.
const ACTIONS: &[(&str, On)] = &[
    ("lambda:ListFunctions", On::Nothing),
    ("lambda:GetFunction", On::Function),
    ("lambda:InvokeFunction", On::Function),
    ("lambda:DeleteFunction", On::Function),
    ("lambda:UpdateFunctionConfiguration", On::Function),
    ("lambda:ListAliases", On::Function),
    ("lambda:UpdateAlias", On::Function),
    ("lambda:ListEventSourceMappings", On::Nothing),
    ("nimbus:GetLogs", On::Function),
    ("nimbus:ListEvents", On::Function),
    ("nimbus:RedriveEvent", On::Function),
    ("nimbus:GetFunctionMetrics", On::Function),
    ("nimbus:GetMetrics", On::Nothing),
    ("nimbus:ListQueues", On::Nothing),
    ("nimbus:GetQueue", On::Queue),
    ("nimbus:ReceiveMessage", On::Queue),
    ("nimbus:SendMessage", On::Queue),
    ("nimbus:PurgeQueue", On::Queue),
    ("nimbus:RedriveQueue", On::Queue),
    ("nimbus:ListAlarms", On::Nothing),
    ("nimbus:DeleteAlarm", On::Alarm),
    ("nimbus:ListBuses", On::Nothing),
    ("nimbus:ListRules", On::Bus),
    ("nimbus:PutRule", On::Bus),
    ("nimbus:DeleteRule", On::Bus),
    ("nimbus:ListSecrets", On::Nothing),
    (nimbus_auth::policy::ADMIN, On::Nothing),
];

#[derive(Deserialize)]
pub(crate) struct WhoamiQuery {
    /// Evaluate function actions on this function (else on every function: `function:*`).
    function: Option<String>,
}

/// `GET /v1/whoami[?function=NAME]` → `{"key_id","name","user_arn","admin","auth",
/// "actions":{"lambda:InvokeFunction":true,…}}`. Each action is evaluated as the request
/// check would (identity policy, and a function's resource policy for invocations) on the
/// named function, or else on every resource of its kind (`function:*`, queue `*`, bus `*`): an
/// action allowed on some resources only shows as `false` without `?function=`.
pub(crate) async fn whoami(
    State(gw): State<Arc<Gateway>>,
    caller: Option<Extension<Caller>>,
    Query(q): Query<WhoamiQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(f) = &q.function {
        nimbus_core::FunctionName::parse(f)?;
    }
    let function = q.function.as_deref().unwrap_or("*");
    let resource = |on: &On| match on {
        On::Nothing => "*".to_string(),
        On::Function => arn::function_arn(function, None),
        On::Queue => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:*"),
        On::Bus => format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/*"),
        On::Alarm => crate::alarms::alarm_arn("*"),
    };
    let Some(Extension(Caller(key))) = caller else {
        // Auth is off: every request is allowed.
        let actions: Map<String, Value> = ACTIONS
            .iter()
            .map(|(a, _)| (a.to_string(), Value::Bool(true)))
            .collect();
        return Ok(Json(json!({
            "key_id": null, "name": null, "user_arn": null,
            "auth": false, "admin": true, "actions": actions,
        })));
    };
    let actions: Map<String, Value> = ACTIONS
        .iter()
        .map(|(a, on)| {
            let c = Check {
                action: a.to_string(),
                resource: resource(on),
            };
            (
                a.to_string(),
                Value::Bool(auth::authorize(&gw, &key, &c, None).is_ok()),
            )
        })
        .collect();
    Ok(Json(json!({
        "key_id": key.id,
        "name": key.name,
        "user_arn": key.user_arn,
        "auth": true,
        "admin": key.policy.is_admin(),
        "actions": actions,
    })))
}
