//! Every request field of CreateFunction and UpdateFunctionConfiguration in one table: the
//! ones Nimbus implements, the ones it stores and reports, and the ones it refuses unless
//! they carry the empty value Terraform and SAM send by default. No field is dropped
//! silently: a field not in the table is not a Lambda parameter and is refused by name.

use crate::ApiError;
use serde_json::{Map, Value};

/// The operation whose body is checked (the two take different field sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    CreateFunction,
    UpdateFunctionConfiguration,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::CreateFunction => "CreateFunction",
            Op::UpdateFunctionConfiguration => "UpdateFunctionConfiguration",
        }
    }
}

/// What Nimbus does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Implemented: checked, stored and applied (see `apply_config`).
    Works,
    /// Checked, stored per version and returned as given; no run-time effect yet.
    #[allow(dead_code)] // no field is only stored today
    Stored,
    /// Accepted only when `Field::accepted` says so (the empty or default value);
    /// anything else is an `InvalidParameterValueException` with this reason.
    Refused(&'static str),
}

/// One request field.
pub(crate) struct Field {
    pub name: &'static str,
    /// Which operations take it (a field sent to the other one is refused).
    pub create: bool,
    pub update: bool,
    /// For `Refused` fields: the values that are accepted anyway (JSON `null` always is).
    pub accepted: fn(&Value, &str) -> bool,
    pub status: Status,
}

/// Lambda's name for the architecture Nimbus runs functions on: the host's own.
pub(crate) const HOST_ARCHITECTURE: &str = if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "x86_64"
};

fn any(_: &Value, _: &str) -> bool {
    true
}

/// `null`, `""`, `false`, or an object or array whose every member is blank.
fn blank(v: &Value, _: &str) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(|x| blank(x, "")),
        Value::Object(o) => o.values().all(|x| blank(x, "")),
        _ => false,
    }
}

fn zip_package(v: &Value, _: &str) -> bool {
    v.as_str() == Some("Zip")
}

fn host_architecture(v: &Value, _: &str) -> bool {
    matches!(v.as_array().map(Vec::as_slice), Some([a]) if a.as_str() == Some(HOST_ARCHITECTURE))
}

fn snap_start_off(v: &Value, _: &str) -> bool {
    match v {
        Value::Object(o) => o
            .iter()
            .all(|(k, x)| blank(x, "") || (k == "ApplyOn" && x.as_str() == Some("None"))),
        other => blank(other, ""),
    }
}

const fn field(name: &'static str, create: bool, update: bool, status: Status) -> Field {
    Field {
        name,
        create,
        update,
        accepted: any,
        status,
    }
}

const fn refused(
    name: &'static str,
    update: bool,
    accepted: fn(&Value, &str) -> bool,
    why: &'static str,
) -> Field {
    Field {
        name,
        create: true,
        update,
        accepted,
        status: Status::Refused(why),
    }
}

/// The table. Keep docs/lambda-compatibility.md's field list in step (a unit test checks
/// that it names every field).
pub(crate) const FIELDS: &[Field] = &[
    field("FunctionName", true, false, Status::Works),
    field("Runtime", true, true, Status::Works),
    field("Role", true, true, Status::Works),
    field("Handler", true, true, Status::Works),
    field("Code", true, false, Status::Works),
    field("Description", true, true, Status::Works),
    field("Timeout", true, true, Status::Works),
    field("MemorySize", true, true, Status::Works),
    field("EphemeralStorage", true, true, Status::Works),
    field("Environment", true, true, Status::Works),
    field("Publish", true, false, Status::Works),
    field("Tags", true, false, Status::Works),
    field("RevisionId", false, true, Status::Works),
    field("TracingConfig", true, true, Status::Works),
    field("DeadLetterConfig", true, true, Status::Works),
    field("Layers", true, true, Status::Works),
    field("LoggingConfig", true, true, Status::Works),
    field("CapacityProviderConfig", true, true, Status::Works),
    refused(
        "PackageType",
        false,
        zip_package,
        "must be Zip: Nimbus does not run container images",
    ),
    refused(
        "Architectures",
        false,
        host_architecture,
        "must name the host's architecture (x86_64 on an x86_64 host, arm64 on an arm64 \
         host): Nimbus runs functions natively, without emulation",
    ),
    refused(
        "VpcConfig",
        true,
        blank,
        "is not supported: Nimbus functions are not attached to a VPC; their network \
         access is the manifest's network policy (send empty SubnetIds and SecurityGroupIds)",
    ),
    refused(
        "KMSKeyArn",
        true,
        blank,
        "is not supported: Nimbus has no KMS to encrypt environment variables with a \
         customer key; keep sensitive values in the secrets store",
    ),
    refused(
        "FileSystemConfigs",
        true,
        blank,
        "is not supported: Nimbus has no EFS file systems to mount",
    ),
    refused(
        "ImageConfig",
        true,
        blank,
        "is not supported: it applies to container images, which Nimbus does not run",
    ),
    refused(
        "SnapStart",
        true,
        snap_start_off,
        "is not supported: ApplyOn must be None (Nimbus's stem cells start instances \
         warm instead)",
    ),
    refused(
        "CodeSigningConfigArn",
        false,
        blank,
        "is not supported: Nimbus does not verify code signatures",
    ),
];

/// Checks every top-level field of a request body against the table: a field of the other
/// operation, a field Lambda does not have, or a refused field with a non-empty value is an
/// `InvalidParameterValueException` naming the field and why.
pub(crate) fn check(op: Op, body: &Map<String, Value>, function: &str) -> Result<(), ApiError> {
    for (key, value) in body {
        let Some(f) = FIELDS.iter().find(|f| f.name == key) else {
            return Err(ApiError::InvalidParameter(format!(
                "unknown field {key}: not a parameter of {}",
                op.as_str()
            )));
        };
        let takes = match op {
            Op::CreateFunction => f.create,
            Op::UpdateFunctionConfiguration => f.update,
        };
        if !takes {
            return Err(ApiError::InvalidParameter(format!(
                "{key} is not a parameter of {}",
                op.as_str()
            )));
        }
        if let Status::Refused(why) = f.status {
            if !value.is_null() && !(f.accepted)(value, function) {
                return Err(ApiError::InvalidParameter(format!("{key} {why}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(op: Op, body: Value) -> Result<(), String> {
        check(op, body.as_object().unwrap(), "f1").map_err(|e| match e {
            ApiError::InvalidParameter(m) => m,
            other => panic!("unexpected error {other:?}"),
        })
    }

    #[test]
    fn terraform_and_sam_defaults_are_accepted() {
        let defaults = json!({
            "VpcConfig": {"SubnetIds": [], "SecurityGroupIds": [], "Ipv6AllowedForDualStack": false},
            "KMSKeyArn": "",
            "FileSystemConfigs": [],
            "DeadLetterConfig": {"TargetArn": ""},
            "ImageConfig": {"EntryPoint": [], "Command": [], "WorkingDirectory": ""},
            "SnapStart": {"ApplyOn": "None"},
            "Architectures": [HOST_ARCHITECTURE],
            "PackageType": "Zip",
            "Layers": [],
            "CodeSigningConfigArn": "",
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": "/aws/lambda/f1"},
            "TracingConfig": {"Mode": "Active"},
        });
        run(Op::CreateFunction, defaults).unwrap();
        run(
            Op::CreateFunction,
            json!({"DeadLetterConfig": {}, "VpcConfig": null}),
        )
        .unwrap();
        let update = json!({"VpcConfig": {"SubnetIds": []}, "KMSKeyArn": "", "RevisionId": "r"});
        run(Op::UpdateFunctionConfiguration, update).unwrap();
    }

    #[test]
    fn set_values_of_unsupported_fields_are_refused_by_name() {
        let cases = [
            (
                "VpcConfig",
                json!({"SubnetIds": ["subnet-1"], "SecurityGroupIds": []}),
            ),
            ("VpcConfig", json!({"Ipv6AllowedForDualStack": true})),
            (
                "KMSKeyArn",
                json!("arn:aws:kms:us-east-1:123456789012:key/k"),
            ),
            (
                "FileSystemConfigs",
                json!([{"Arn": "a", "LocalMountPath": "/mnt/x"}]),
            ),
            ("ImageConfig", json!({"Command": ["app.handler"]})),
            ("SnapStart", json!({"ApplyOn": "PublishedVersions"})),
            (
                "CodeSigningConfigArn",
                json!("arn:aws:lambda:us-east-1:1:code-signing-config:c"),
            ),
            ("PackageType", json!("Image")),
            ("Architectures", json!(["sparc"])),
            ("Architectures", json!(["x86_64", "arm64"])),
            ("Architectures", json!([])),
        ];
        for (name, value) in cases {
            let err = run(Op::CreateFunction, json!({ name: value })).unwrap_err();
            assert!(err.starts_with(&format!("{name} ")), "{name}: {err}");
            assert!(
                err.len() > name.len() + 20,
                "{name}: no reason given: {err}"
            );
        }
        let err = run(
            Op::CreateFunction,
            json!({"VpcConfig": {"SubnetIds": ["subnet-1"]}}),
        );
        assert!(err.unwrap_err().contains("not attached to a VPC"));
    }

    #[test]
    fn fields_of_the_other_operation_and_unknown_fields_are_refused() {
        let err = run(Op::UpdateFunctionConfiguration, json!({"Code": {}})).unwrap_err();
        assert_eq!(
            err,
            "Code is not a parameter of UpdateFunctionConfiguration"
        );
        let err = run(
            Op::UpdateFunctionConfiguration,
            json!({"Architectures": ["x86_64"]}),
        );
        assert!(err.unwrap_err().starts_with("Architectures is not"));
        let err = run(Op::CreateFunction, json!({"RevisionId": "r"})).unwrap_err();
        assert!(err.starts_with("RevisionId is not a parameter of CreateFunction"));
        let err = run(Op::CreateFunction, json!({"Timeut": 3})).unwrap_err();
        assert_eq!(
            err,
            "unknown field Timeut: not a parameter of CreateFunction"
        );
    }

    #[test]
    fn every_field_is_listed_in_the_compatibility_doc() {
        let doc = include_str!("../../../docs/lambda-compatibility.md");
        let section = doc
            .split("### Function configuration fields")
            .nth(1)
            .expect("docs/lambda-compatibility.md has a \"Function configuration fields\" section");
        for f in FIELDS {
            assert!(
                section.contains(&format!("| `{}` |", f.name)),
                "docs/lambda-compatibility.md does not list {}",
                f.name
            );
        }
    }

    #[test]
    fn field_names_are_unique() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert!(
                FIELDS[i + 1..].iter().all(|g| g.name != f.name),
                "{}",
                f.name
            );
        }
    }
}
