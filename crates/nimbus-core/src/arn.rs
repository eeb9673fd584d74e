//! Lambda ARNs and the function-name forms the Invoke API accepts.

use crate::{CoreError, FunctionName};

/// The region Nimbus reports; Lambda clients need one.
pub const REGION: &str = "us-east-1";
/// The account id Nimbus reports in ARNs.
pub const ACCOUNT: &str = "000000000000";

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
pub fn function_arn(name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) if q != crate::LATEST => {
            format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}:{q}")
        }
        _ => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"),
    }
}

/// The ARN of an external target (a NATS subject, a RabbitMQ exchange, a Redis stream or
/// an MQTT topic declared with `/v1/targets/NAME`):
/// `arn:nimbus:targets:REGION:ACCOUNT:target/NAME`.
pub fn target_arn(name: &str) -> String {
    format!("arn:nimbus:targets:{REGION}:{ACCOUNT}:target/{name}")
}

/// Whether `arn` names a state machine (a version or alias of one included):
/// `arn:aws:states:REGION:ACCOUNT:stateMachine:NAME[:QUALIFIER]`.
pub fn is_state_machine_arn(arn: &str) -> bool {
    arn.strip_prefix("arn:aws:states:")
        .and_then(|r| r.split_once(":stateMachine:"))
        .is_some_and(|(_, name)| !name.is_empty())
}

/// The name in an external target's ARN, if `arn` is one with a valid name.
pub fn target_from_arn(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:nimbus:targets:")
        .and_then(|rest| rest.split_once(":target/"))
        .map(|(_, name)| name)
        .filter(|n| is_target_name(n))
}

/// 1-64 letters, digits, `-` or `_`.
pub fn is_target_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses what Lambda accepts as `FunctionName`: a name, `name:qualifier`, a partial ARN
/// (`ACCOUNT:function:name[:q]`) or a full ARN (`arn:aws:lambda:REGION:ACCOUNT:function:name[:q]`).
/// Returns the name and the qualifier embedded in it, if any.
pub fn parse_function_ref(s: &str) -> Result<(FunctionName, Option<String>), CoreError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (name, qualifier) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        [_acct, "function", name] => (*name, None),
        [_acct, "function", name, q] => (*name, Some(*q)),
        ["arn", _partition, "lambda", _region, _acct, "function", name] => (*name, None),
        ["arn", _partition, "lambda", _region, _acct, "function", name, q] => (*name, Some(*q)),
        _ => return Err(CoreError::InvalidName(s.to_string())),
    };
    let name = FunctionName::parse(name).map_err(|_| CoreError::InvalidName(s.to_string()))?;
    let qualifier = qualifier.map(validate_qualifier).transpose()?;
    Ok((name, qualifier))
}

/// A qualifier is `$LATEST`, a version number, or an alias name (letters, digits, '-', '_').
pub fn validate_qualifier(q: &str) -> Result<String, CoreError> {
    let ok = q == crate::LATEST
        || (!q.is_empty()
            && q.len() <= 128
            && q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok {
        Ok(q.to_string())
    } else {
        Err(CoreError::InvalidQualifier(q.to_string()))
    }
}

/// Longest layer name (Lambda's 140).
pub const LAYER_NAME_MAX: usize = 140;

/// IAM's rule for role and policy names: 1 to `max` of `[\w+=,.@-]` (64 for a role, 128
/// for a policy).
pub fn is_iam_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME` (without a version) or
/// `…:layer:NAME:VERSION`.
pub fn layer_arn(name: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}:{v}"),
        None => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}"),
    }
}

/// Checks a layer name: 1-140 letters, digits, '-' or '_' (Lambda's pattern).
pub fn validate_layer_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= LAYER_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidLayer(format!(
            "invalid layer name {name:?}: use 1-{LAYER_NAME_MAX} letters, digits, '-' or '_'"
        )))
    }
}

/// Parses a layer version ARN (`arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION`) into
/// the layer's name and version number.
pub fn parse_layer_version_arn(s: &str) -> Result<(String, u64), CoreError> {
    let bad = || {
        CoreError::InvalidLayer(format!(
            "{s:?} is not a layer version ARN: use arn:aws:lambda:{REGION}:{ACCOUNT}:layer:NAME:VERSION"
        ))
    };
    let parts: Vec<&str> = s.split(':').collect();
    let ["arn", partition, "lambda", _region, _account, "layer", name, version] = parts.as_slice()
    else {
        return Err(bad());
    };
    if !partition.starts_with("aws") {
        return Err(bad());
    }
    validate_layer_name(name)?;
    let version = version
        .parse::<u64>()
        .ok()
        .filter(|v| *v >= 1 && version.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?;
    Ok((name.to_string(), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_arns() {
        let arn = layer_arn("deps-1_a", Some(3));
        assert_eq!(
            arn,
            "arn:aws:lambda:us-east-1:000000000000:layer:deps-1_a:3"
        );
        assert_eq!(
            parse_layer_version_arn(&arn).unwrap(),
            ("deps-1_a".into(), 3)
        );
        for bad in [
            "arn:aws:lambda:us-east-1:000000000000:layer:deps",
            "arn:aws:lambda:us-east-1:000000000000:layer:deps:0",
            "arn:aws:lambda:us-east-1:000000000000:layer:deps:+1",
            "arn:aws:lambda:us-east-1:000000000000:function:deps:1",
            "arn:aws:lambda:us-east-1:000000000000:layer:d/e:1",
            "deps:1",
        ] {
            assert!(parse_layer_version_arn(bad).is_err(), "{bad}");
        }
        assert!(validate_layer_name(&"a".repeat(140)).is_ok());
        assert!(validate_layer_name(&"a".repeat(141)).is_err());
    }

    #[test]
    fn refs() {
        let p = |s| parse_function_ref(s).map(|(n, q)| (n.to_string(), q));
        assert_eq!(p("hello").unwrap(), ("hello".into(), None));
        assert_eq!(p("hello:3").unwrap(), ("hello".into(), Some("3".into())));
        assert_eq!(
            p("hello:$LATEST").unwrap(),
            ("hello".into(), Some("$LATEST".into()))
        );
        assert_eq!(
            p("123456789012:function:hello").unwrap(),
            ("hello".into(), None)
        );
        assert_eq!(
            p("arn:aws:lambda:us-east-1:123456789012:function:hello:live").unwrap(),
            ("hello".into(), Some("live".into()))
        );
        assert!(p("a:b:c").is_err());
        assert!(p("bad name").is_err());
        assert!(p("hello:bad qual").is_err());
    }

    #[test]
    fn arns() {
        assert_eq!(
            function_arn("f", None),
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        assert_eq!(function_arn("f", Some("$LATEST")), function_arn("f", None));
        assert!(function_arn("f", Some("2")).ends_with(":f:2"));
    }
}
