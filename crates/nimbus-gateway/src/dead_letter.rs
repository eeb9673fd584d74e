//! Lambda's `DeadLetterConfig`: a function version names a built-in queue or an event bus
//! that receives its asynchronous events when they are discarded. The engine does the
//! sending (`nimbus_events::engine`); the gateway checks the target exists when a
//! configuration names it and tells the engine which target an event's version has.

use crate::{ApiError, Gateway};
use nimbus_core::{FunctionConfig, FunctionName, LATEST};
use std::sync::Arc;

/// Refuses a configuration whose dead-letter target does not exist (yet): the queue or
/// bus must be created first, as on Lambda, where the queue must exist and be writable.
pub(crate) async fn check_target(gw: &Arc<Gateway>, cfg: &FunctionConfig) -> Result<(), ApiError> {
    let Some(target) = cfg.dead_letter_target.clone() else {
        return Ok(());
    };
    let missing = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::InvalidParameter(format!(
            "DeadLetterConfig.TargetArn {target:?}: {what} ({e}); create it first"
        ))
    };
    if let Some(queue) = nimbus_events::mapping::queue_from_arn(&target) {
        let runner = gw.queues.get().ok_or_else(|| {
            ApiError::ServiceUnavailable("queues are not enabled on this server".into())
        })?;
        let (store, q) = (runner.store().clone(), queue.to_string());
        return match tokio::task::spawn_blocking(move || store.get_queue(&q)).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(missing("no such queue", &e)),
        };
    }
    if let Some((_, bus)) = target
        .strip_prefix("arn:aws:events:")
        .and_then(|rest| rest.split_once(":event-bus/"))
    {
        let events = gw.bus.get().ok_or_else(|| {
            ApiError::ServiceUnavailable("the event bus is not enabled on this server".into())
        })?;
        let (store, b) = (events.store().clone(), bus.to_string());
        return match tokio::task::spawn_blocking(move || store.get_bus(&b)).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(missing("no such event bus", &e)),
        };
    }
    // `FunctionConfig::validate` has refused every other shape already.
    Ok(())
}

/// The dead-letter target of the version an async event invokes (none when the function
/// or qualifier is gone).
pub(crate) async fn target_of(
    gw: &Arc<Gateway>,
    function: &str,
    qualifier: &str,
) -> Option<String> {
    let name = FunctionName::parse(function).ok()?;
    let q = (qualifier != LATEST).then_some(qualifier);
    let resolved = gw.resolve(&name, q).await.ok()?;
    resolved.version.config.dead_letter_target.clone()
}
