//! Where a notification goes: a function (asynchronous invocation), a queue (a message) or
//! the default event bus (a `PutEvents` entry).

use crate::{ObjectError, Result};
use nimbus_core::arn::{validate_qualifier, ACCOUNT, REGION};
use nimbus_core::FunctionName;

/// A notification's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Invoke the function asynchronously (`InvocationType: Event`) with the payload.
    Function {
        /// The ARN as configured.
        arn: String,
        name: String,
        /// Version or alias from the ARN's last part; `None` is `$LATEST`.
        qualifier: Option<String>,
    },
    /// Send the payload as a message body to the queue.
    Queue {
        /// The ARN as configured.
        arn: String,
        name: String,
    },
    /// Put the payload (a `PutEvents` entry) on the default event bus.
    EventBridge,
}

fn malformed(arn: &str, expected: &str) -> ObjectError {
    ObjectError::InvalidArgument(format!(
        "The ARN could not be parsed: {arn:?} (expected {expected})"
    ))
}

/// `arn:aws:SERVICE:REGION:ACCOUNT:` with a region and a 12-digit account: the rest.
fn strip_arn_head<'a>(arn: &'a str, service: &str) -> Option<&'a str> {
    let rest = arn.strip_prefix("arn:aws:")?.strip_prefix(service)?;
    let rest = rest.strip_prefix(':')?;
    let (region, rest) = rest.split_once(':')?;
    let (account, rest) = rest.split_once(':')?;
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    (!region.is_empty() && account_ok).then_some(rest)
}

impl Target {
    /// A function target from `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
    /// Nimbus has one account and region: the function is found by name and qualifier.
    pub fn function(arn: &str) -> Result<Self> {
        const FORM: &str = "arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]";
        let rest = strip_arn_head(arn, "lambda")
            .and_then(|r| r.strip_prefix("function:"))
            .ok_or_else(|| malformed(arn, FORM))?;
        let (name, qualifier) = match rest.split_once(':') {
            Some((n, q)) => (n, Some(q)),
            None => (rest, None),
        };
        let name = FunctionName::parse(name).map_err(|_| malformed(arn, FORM))?;
        let qualifier = qualifier
            .map(validate_qualifier)
            .transpose()
            .map_err(|_| malformed(arn, FORM))?
            .filter(|q| q != nimbus_core::LATEST);
        Ok(Target::Function {
            arn: arn.to_string(),
            name: name.to_string(),
            qualifier,
        })
    }

    /// A queue target from `arn:aws:sqs:REGION:ACCOUNT:NAME`.
    pub fn queue(arn: &str) -> Result<Self> {
        const FORM: &str = "arn:aws:sqs:REGION:ACCOUNT:NAME";
        let name = strip_arn_head(arn, "sqs").ok_or_else(|| malformed(arn, FORM))?;
        if name.ends_with(".fifo") {
            return Err(ObjectError::InvalidArgument(format!(
                "FIFO queues are not supported as notification destinations: {arn:?}"
            )));
        }
        nimbus_store::validate_queue_name(name).map_err(|_| malformed(arn, FORM))?;
        Ok(Target::Queue {
            arn: arn.to_string(),
            name: name.to_string(),
        })
    }

    /// `function`, `queue` or `eventbridge`: the outbox's `target` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Function { .. } => "function",
            Target::Queue { .. } => "queue",
            Target::EventBridge => "eventbridge",
        }
    }

    /// The destination's ARN (the default bus's for EventBridge).
    pub fn arn(&self) -> String {
        match self {
            Target::Function { arn, .. } | Target::Queue { arn, .. } => arn.clone(),
            Target::EventBridge => format!(
                "arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{}",
                nimbus_store::DEFAULT_BUS
            ),
        }
    }

    /// The target an outbox row names (`kind`, `arn` as [`Target::kind`] and
    /// [`Target::arn`] wrote them).
    pub(crate) fn from_stored(kind: &str, arn: &str) -> Result<Self> {
        let parsed = match kind {
            "function" => Target::function(arn),
            "queue" => Target::queue(arn),
            "eventbridge" => Ok(Target::EventBridge),
            other => Err(ObjectError::Corrupt(format!(
                "an outbox row has the unknown target kind {other:?}"
            ))),
        };
        parsed.map_err(|e| ObjectError::Corrupt(format!("an outbox row's target: {e}")))
    }
}
