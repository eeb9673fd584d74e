//! IAM's query protocol, no I/O: a form (`Action=CreateRole&Version=2010-05-08&…`, lists
//! as `Tags.member.N.Key`) decoded into [`Request`], answers as IAM's XML
//! (`<CreateRoleResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">`, policy
//! documents URL-encoded) and IAM's error shape ([`IamError`]).

use nimbus_core::arn::ACCOUNT;
use nimbus_store::Role;

pub(crate) const VERSION: &str = "2010-05-08";
const XMLNS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// `MaxSessionDuration`'s bounds and default, in seconds.
pub(crate) const MIN_SESSION_S: u32 = 3600;
pub(crate) const MAX_SESSION_S: u32 = 43200;

/// An IAM error: its code, HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct IamError {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

impl IamError {
    pub(crate) fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
        }
    }
    pub(crate) fn no_such_entity(message: impl Into<String>) -> Self {
        Self::new("NoSuchEntity", 404, message)
    }
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationError", 400, message)
    }
    pub(crate) fn malformed_policy(message: impl Into<String>) -> Self {
        Self::new("MalformedPolicyDocument", 400, message)
    }

    /// Sender faults are 4xx, the rest the service's.
    fn fault(&self) -> &'static str {
        if self.status < 500 {
            "Sender"
        } else {
            "Receiver"
        }
    }

    /// `<ErrorResponse>` as IAM answers.
    pub(crate) fn to_xml(&self, request_id: &str) -> String {
        format!(
            "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            self.fault(),
            self.code,
            esc(&self.message),
            esc(request_id)
        )
    }
}

/// One IAM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    CreateRole {
        name: String,
        path: String,
        trust_policy: String,
        description: Option<String>,
        max_session_s: u32,
        tags: Vec<(String, String)>,
    },
    GetRole {
        name: String,
    },
    DeleteRole {
        name: String,
    },
    ListRoles {
        path_prefix: String,
        marker: Option<String>,
        max_items: usize,
    },
    UpdateRole {
        name: String,
        description: Option<String>,
        max_session_s: Option<u32>,
    },
    PutRolePolicy {
        name: String,
        policy: String,
        document: String,
    },
    GetRolePolicy {
        name: String,
        policy: String,
    },
    DeleteRolePolicy {
        name: String,
        policy: String,
    },
    ListRolePolicies {
        name: String,
        marker: Option<String>,
        max_items: usize,
    },
    TagRole {
        name: String,
        tags: Vec<(String, String)>,
    },
    UntagRole {
        name: String,
        keys: Vec<String>,
    },
    ListRoleTags {
        name: String,
    },
}

impl Request {
    /// The operation's name (`iam:<Op>` is the action it needs).
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Request::CreateRole { .. } => "CreateRole",
            Request::GetRole { .. } => "GetRole",
            Request::DeleteRole { .. } => "DeleteRole",
            Request::ListRoles { .. } => "ListRoles",
            Request::UpdateRole { .. } => "UpdateRole",
            Request::PutRolePolicy { .. } => "PutRolePolicy",
            Request::GetRolePolicy { .. } => "GetRolePolicy",
            Request::DeleteRolePolicy { .. } => "DeleteRolePolicy",
            Request::ListRolePolicies { .. } => "ListRolePolicies",
            Request::TagRole { .. } => "TagRole",
            Request::UntagRole { .. } => "UntagRole",
            Request::ListRoleTags { .. } => "ListRoleTags",
        }
    }

    /// The role the request acts on (`None`: ListRoles).
    pub(crate) fn role_name(&self) -> Option<&str> {
        match self {
            Request::ListRoles { .. } => None,
            Request::CreateRole { name, .. }
            | Request::GetRole { name }
            | Request::DeleteRole { name }
            | Request::UpdateRole { name, .. }
            | Request::PutRolePolicy { name, .. }
            | Request::GetRolePolicy { name, .. }
            | Request::DeleteRolePolicy { name, .. }
            | Request::ListRolePolicies { name, .. }
            | Request::TagRole { name, .. }
            | Request::UntagRole { name, .. }
            | Request::ListRoleTags { name } => Some(name),
        }
    }
}

/// The form's parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<String, IamError> {
        self.get(name).map(str::to_string).ok_or_else(|| {
            IamError::validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(name)
            ))
        })
    }

    /// `PREFIX.member.N[.FIELD]` values in N order.
    fn members(&self, prefix: &str, field: &str) -> Vec<(u32, String)> {
        let head = format!("{prefix}.member.");
        let mut out: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&head)?;
                let (n, f) = match rest.split_once('.') {
                    Some((n, f)) => (n, f),
                    None => (rest, ""),
                };
                (f == field).then(|| Some((n.parse().ok()?, v.clone())))?
            })
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }

    fn tags(&self) -> Result<Vec<(String, String)>, IamError> {
        let keys = self.members("Tags", "Key");
        let values = self.members("Tags", "Value");
        let mut out = Vec::new();
        for (n, k) in keys {
            let v = values
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return Err(IamError::validation(format!(
                    "tag {k:?}: keys are 1-128 characters and values at most 256"
                )));
            }
            out.push((k, v));
        }
        if out.len() > 50 {
            return Err(IamError::new(
                "LimitExceeded",
                409,
                "a role has at most 50 tags",
            ));
        }
        Ok(out)
    }

    fn max_items(&self) -> Result<usize, IamError> {
        match self.get("MaxItems") {
            None => Ok(100),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    IamError::validation(format!(
                        "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000"
                    ))
                }),
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `RoleName`: 1–64 of `[\w+=,.@-]`.
pub(crate) fn validate_role_name(name: &str) -> Result<(), IamError> {
    if nimbus_core::arn::is_iam_name(name, 64) {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "1 validation error detected: Value '{name}' at 'roleName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and 64"
        )))
    }
}

/// `PolicyName`: 1–128 of `[\w+=,.@-]`.
fn validate_policy_name(name: &str) -> Result<(), IamError> {
    if nimbus_core::arn::is_iam_name(name, 128) {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "1 validation error detected: Value '{name}' at 'policyName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        )))
    }
}

/// `Path`: `/`, or `/` + segments + `/`, at most 512 characters of printable ASCII.
fn validate_path(path: &str) -> Result<(), IamError> {
    let ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= 512
        && !path.contains("//")
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "The specified value for path is invalid. It must begin and end with / and contain only alphanumeric characters and/or / characters: {path}"
        )))
    }
}

fn max_session(v: &str) -> Result<u32, IamError> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (MIN_SESSION_S..=MAX_SESSION_S).contains(n))
        .ok_or_else(|| {
            IamError::validation(format!(
                "1 validation error detected: Value '{v}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value between {MIN_SESSION_S} and {MAX_SESSION_S}"
            ))
        })
}

fn description(p: &Params) -> Result<Option<String>, IamError> {
    match p.get("Description") {
        Some(d) if d.chars().count() > 1000 => Err(IamError::validation(
            "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 1000",
        )),
        other => Ok(other.map(str::to_string)),
    }
}

/// Decodes a form-encoded IAM request.
pub(crate) fn decode(body: &[u8]) -> Result<Request, IamError> {
    let p = Params(
        form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    let action = p.get("Action").unwrap_or_default().to_string();
    if let Some(v) = p.get("Version").filter(|v| *v != VERSION) {
        return Err(IamError::new(
            "InvalidAction",
            400,
            format!("Could not find operation {action} for version {v}"),
        ));
    }
    let name = || -> Result<String, IamError> {
        let n = p.required("RoleName")?;
        validate_role_name(&n)?;
        Ok(n)
    };
    let policy_name = || -> Result<String, IamError> {
        let n = p.required("PolicyName")?;
        validate_policy_name(&n)?;
        Ok(n)
    };
    Ok(match action.as_str() {
        "CreateRole" => {
            let path = p.get("Path").unwrap_or("/").to_string();
            validate_path(&path)?;
            Request::CreateRole {
                name: name()?,
                path,
                trust_policy: p.required("AssumeRolePolicyDocument")?,
                description: description(&p)?,
                max_session_s: p
                    .get("MaxSessionDuration")
                    .map(max_session)
                    .transpose()?
                    .unwrap_or(MIN_SESSION_S),
                tags: p.tags()?,
            }
        }
        "GetRole" => Request::GetRole { name: name()? },
        "DeleteRole" => Request::DeleteRole { name: name()? },
        "ListRoles" => {
            let path_prefix = p.get("PathPrefix").unwrap_or("/").to_string();
            Request::ListRoles {
                path_prefix,
                marker: p.get("Marker").map(str::to_string),
                max_items: p.max_items()?,
            }
        }
        "UpdateRole" => Request::UpdateRole {
            name: name()?,
            description: description(&p)?,
            max_session_s: p.get("MaxSessionDuration").map(max_session).transpose()?,
        },
        "PutRolePolicy" => Request::PutRolePolicy {
            name: name()?,
            policy: policy_name()?,
            document: p.required("PolicyDocument")?,
        },
        "GetRolePolicy" => Request::GetRolePolicy {
            name: name()?,
            policy: policy_name()?,
        },
        "DeleteRolePolicy" => Request::DeleteRolePolicy {
            name: name()?,
            policy: policy_name()?,
        },
        "ListRolePolicies" => Request::ListRolePolicies {
            name: name()?,
            marker: p.get("Marker").map(str::to_string),
            max_items: p.max_items()?,
        },
        "TagRole" => Request::TagRole {
            name: name()?,
            tags: p.tags()?,
        },
        "UntagRole" => Request::UntagRole {
            name: name()?,
            keys: p
                .members("TagKeys", "")
                .into_iter()
                .map(|(_, k)| k)
                .collect(),
        },
        "ListRoleTags" => Request::ListRoleTags { name: name()? },
        "" => return Err(IamError::new("MissingAction", 400, "Missing Action")),
        other => {
            return Err(IamError::new(
                "InvalidAction",
                400,
                format!("Could not find operation {other} for version {VERSION}"),
            ))
        }
    })
}

/// `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
pub(crate) fn role_arn(path: &str, name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role{path}{name}")
}

/// XML text escaping.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A policy document as IAM returns it: URL-encoded (botocore decodes it with `unquote`,
/// so spaces are `%20`, never `+`).
pub(crate) fn encode_document(doc: &str) -> String {
    nimbus_auth::sigv4::uri_encode(doc.as_bytes(), false)
}

fn date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn tags_xml(tags: &[(String, String)]) -> String {
    let mut out = String::from("<Tags>");
    for (k, v) in tags {
        out.push_str(&format!(
            "<member><Key>{}</Key><Value>{}</Value></member>",
            esc(k),
            esc(v)
        ));
    }
    out.push_str("</Tags>");
    out
}

/// A `<Role>` (or, in lists, `<member>`) element.
pub(crate) fn role_xml(element: &str, r: &Role, with_tags: bool) -> String {
    let mut out = format!(
        "<{element}><Path>{}</Path><RoleName>{}</RoleName><RoleId>{}</RoleId><Arn>{}</Arn><CreateDate>{}</CreateDate><AssumeRolePolicyDocument>{}</AssumeRolePolicyDocument>",
        esc(&r.path),
        esc(&r.name),
        esc(&r.id),
        esc(&role_arn(&r.path, &r.name)),
        date(r.created_ms),
        encode_document(&r.trust_policy)
    );
    if let Some(d) = &r.description {
        out.push_str(&format!("<Description>{}</Description>", esc(d)));
    }
    out.push_str(&format!(
        "<MaxSessionDuration>{}</MaxSessionDuration>",
        r.max_session_s
    ));
    if with_tags && !r.tags.is_empty() {
        out.push_str(&tags_xml(&r.tags));
    }
    out.push_str(&format!("</{element}>"));
    out
}

/// The whole answer: `<OpResponse>` with its `<OpResult>` (when `result` is `Some`) and the
/// request id.
pub(crate) fn response(op: &str, result: Option<&str>, request_id: &str) -> String {
    let result = match result {
        Some(r) => format!("<{op}Result>{r}</{op}Result>"),
        None => String::new(),
    };
    format!(
        "<{op}Response xmlns=\"{XMLNS}\">{result}<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{op}Response>",
        esc(request_id)
    )
}

/// A list's `<Name><member>…</member></Name>` of plain values.
pub(crate) fn members_xml(name: &str, values: &[String]) -> String {
    let mut out = format!("<{name}>");
    for v in values {
        out.push_str(&format!("<member>{}</member>", esc(v)));
    }
    out.push_str(&format!("</{name}>"));
    out
}

pub(crate) fn list_tags_xml(tags: &[(String, String)]) -> String {
    format!("{}<IsTruncated>false</IsTruncated>", tags_xml(tags))
}

/// A new role id: `AROA` + 17 of `A-Z2-7`.
pub(crate) fn new_role_id() -> String {
    let (id, _) = nimbus_auth::keys::generate();
    let (more, _) = nimbus_auth::keys::generate();
    format!("AROA{}{}", &id[4..], &more[4..5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_create_role_with_tags() {
        let body = b"Action=CreateRole&Version=2010-05-08&RoleName=thumbs&Path=%2Fapp%2F&AssumeRolePolicyDocument=%7B%7D&MaxSessionDuration=7200&Tags.member.2.Key=b&Tags.member.2.Value=2&Tags.member.1.Key=a&Tags.member.1.Value=1";
        assert_eq!(
            decode(body).unwrap(),
            Request::CreateRole {
                name: "thumbs".into(),
                path: "/app/".into(),
                trust_policy: "{}".into(),
                description: None,
                max_session_s: 7200,
                tags: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            }
        );
        let bad = |body: &[u8]| decode(body).unwrap_err().code;
        assert_eq!(
            bad(b"Action=CreateRole&RoleName=a%20b&AssumeRolePolicyDocument=x"),
            "ValidationError"
        );
        assert_eq!(
            bad(b"Action=CreateRole&RoleName=a&AssumeRolePolicyDocument=x&MaxSessionDuration=60"),
            "ValidationError"
        );
        assert_eq!(
            bad(b"Action=CreateRole&RoleName=a&AssumeRolePolicyDocument=x&Path=app"),
            "ValidationError"
        );
        assert_eq!(bad(b"Action=CreateRole&RoleName=a"), "ValidationError");
        assert_eq!(bad(b"Action=Nope"), "InvalidAction");
        assert_eq!(
            decode(b"Action=UntagRole&RoleName=r&TagKeys.member.1=a&TagKeys.member.2=b").unwrap(),
            Request::UntagRole {
                name: "r".into(),
                keys: vec!["a".into(), "b".into()]
            }
        );
    }

    #[test]
    fn answers_as_iam() {
        let r = Role {
            name: "thumbs".into(),
            path: "/".into(),
            id: new_role_id(),
            trust_policy: "{\"Version\": \"2012-10-17\"}".into(),
            description: Some("a & b".into()),
            max_session_s: 3600,
            tags: vec![],
            created_ms: 0,
        };
        assert_eq!(r.id.len(), 21);
        let xml = response("GetRole", Some(&role_xml("Role", &r, true)), "rid");
        assert!(xml.starts_with(
            "<GetRoleResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><GetRoleResult><Role><Path>/</Path><RoleName>thumbs</RoleName>"
        ));
        assert!(xml.contains("<Arn>arn:aws:iam::000000000000:role/thumbs</Arn>"));
        assert!(xml.contains(
            "<AssumeRolePolicyDocument>%7B%22Version%22%3A%20%222012-10-17%22%7D</AssumeRolePolicyDocument>"
        ));
        assert!(xml.contains("<Description>a &amp; b</Description>"));
        assert!(xml.contains("<CreateDate>1970-01-01T00:00:00Z</CreateDate>"));
        let e = IamError::no_such_entity("gone").to_xml("rid");
        assert_eq!(e, "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>gone</Message></Error><RequestId>rid</RequestId></ErrorResponse>");
    }
}
