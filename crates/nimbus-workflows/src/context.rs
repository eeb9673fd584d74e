//! A loaded definition and the context object (`$$`, `$states.context`) its states see.
//!
//! Source: <https://docs.aws.amazon.com/step-functions/latest/dg/input-output-contextobject.html>.

use nimbus_flows::definition::StateMachine;
use nimbus_flows::store::{Execution, Millis};
use serde_json::{json, Value};
use time::macros::format_description;
use time::OffsetDateTime;

/// A revision's parsed definition, cached by revision id.
#[derive(Debug)]
pub struct Loaded {
    pub machine: StateMachine,
    pub role_arn: String,
    /// Whether any state may read `$$.Execution.Input` (parsing a large input for every
    /// step is avoided otherwise).
    pub reads_input: bool,
}

impl Loaded {
    pub fn parse(definition: &str, role_arn: &str) -> nimbus_flows::Result<Self> {
        Ok(Loaded {
            machine: StateMachine::parse(definition)?,
            role_arn: role_arn.to_string(),
            reads_input: definition.contains("$$.Execution")
                || definition.contains("\"$$\"")
                || definition.contains("$states.context"),
        })
    }

    /// The context object of a state of `exec`.
    pub fn context(
        &self,
        exec: &Execution,
        state: &str,
        retry: u32,
        entered: Millis,
        token: Option<&str>,
    ) -> Value {
        let input = if self.reads_input {
            serde_json::from_str(&exec.input).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let machine_name = exec.machine_arn.rsplit(':').next().unwrap_or_default();
        let mut ctx = json!({
            "Execution": {
                "Id": exec.arn,
                "Input": input,
                "Name": exec.name,
                "RoleArn": self.role_arn,
                "StartTime": iso_millis(exec.start_date),
                "RedriveCount": exec.redrive_count,
            },
            "State": {
                "EnteredTime": iso_millis(entered),
                "Name": state,
                "RetryCount": retry,
            },
            "StateMachine": {
                "Id": exec.machine_arn,
                "Name": machine_name,
            },
        });
        if let Some(t) = token {
            ctx["Task"] = json!({ "Token": t });
        }
        ctx
    }
}

/// `2024-01-02T03:04:05.678Z`.
pub fn iso_millis(ms: Millis) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_has_millis_and_z() {
        assert_eq!(
            super::iso_millis(1_553_631_253_192),
            "2019-03-26T20:14:13.192Z"
        );
    }
}
