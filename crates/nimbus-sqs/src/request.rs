//! The one request enum both protocols decode into.

use crate::attributes::AttributeValueIn;
use crate::SqsError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

type Attrs = BTreeMap<String, AttributeValueIn>;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateQueue {
    pub queue_name: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Lower-case in SQS's model.
    #[serde(default, rename = "tags")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetQueueUrl {
    pub queue_name: String,
    #[serde(default, rename = "QueueOwnerAWSAccountId")]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListQueues {
    pub queue_name_prefix: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetQueueAttributes {
    pub queue_url: String,
    #[serde(default)]
    pub attribute_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetQueueAttributes {
    pub queue_url: String,
    pub attributes: BTreeMap<String, String>,
}

/// One message to send (SendMessage, or an entry of SendMessageBatch).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SendEntry {
    /// Batch entries only.
    pub id: Option<String>,
    pub message_body: Option<String>,
    pub delay_seconds: Option<i64>,
    pub message_attributes: Attrs,
    pub message_system_attributes: Attrs,
    pub message_deduplication_id: Option<String>,
    pub message_group_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendMessage {
    pub queue_url: String,
    #[serde(flatten)]
    pub entry: SendEntry,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendMessageBatch {
    pub queue_url: String,
    #[serde(default)]
    pub entries: Vec<SendEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReceiveMessage {
    pub queue_url: String,
    #[serde(default)]
    pub max_number_of_messages: Option<i64>,
    #[serde(default)]
    pub visibility_timeout: Option<i64>,
    #[serde(default)]
    pub wait_time_seconds: Option<i64>,
    /// The older name of `MessageSystemAttributeNames`.
    #[serde(default)]
    pub attribute_names: Vec<String>,
    #[serde(default)]
    pub message_system_attribute_names: Vec<String>,
    #[serde(default)]
    pub message_attribute_names: Vec<String>,
    #[serde(default)]
    pub receive_request_attempt_id: Option<String>,
}

/// An entry of DeleteMessageBatch or ChangeMessageVisibilityBatch.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReceiptEntry {
    pub id: Option<String>,
    pub receipt_handle: Option<String>,
    pub visibility_timeout: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteMessage {
    pub queue_url: String,
    pub receipt_handle: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChangeMessageVisibility {
    pub queue_url: String,
    pub receipt_handle: String,
    pub visibility_timeout: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchOfReceipts {
    pub queue_url: String,
    #[serde(default)]
    pub entries: Vec<ReceiptEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueueOnly {
    pub queue_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagQueue {
    pub queue_url: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagQueue {
    pub queue_url: String,
    pub tag_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartMessageMoveTask {
    pub source_arn: String,
    #[serde(default)]
    pub destination_arn: Option<String>,
    #[serde(default)]
    pub max_number_of_messages_per_second: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListMessageMoveTasks {
    pub source_arn: String,
    #[serde(default)]
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CancelMessageMoveTask {
    pub task_handle: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListDeadLetterSourceQueues {
    pub queue_url: String,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default)]
    pub max_results: Option<i64>,
}

/// Every SQS operation Nimbus serves; the others decode to [`Request::Unsupported`].
#[derive(Debug, Clone)]
pub enum Request {
    CreateQueue(CreateQueue),
    GetQueueUrl(GetQueueUrl),
    ListQueues(ListQueues),
    GetQueueAttributes(GetQueueAttributes),
    SetQueueAttributes(SetQueueAttributes),
    SendMessage(SendMessage),
    SendMessageBatch(SendMessageBatch),
    ReceiveMessage(ReceiveMessage),
    DeleteMessage(DeleteMessage),
    DeleteMessageBatch(BatchOfReceipts),
    ChangeMessageVisibility(ChangeMessageVisibility),
    ChangeMessageVisibilityBatch(BatchOfReceipts),
    PurgeQueue(QueueOnly),
    DeleteQueue(QueueOnly),
    TagQueue(TagQueue),
    UntagQueue(UntagQueue),
    ListQueueTags(QueueOnly),
    StartMessageMoveTask(StartMessageMoveTask),
    ListMessageMoveTasks(ListMessageMoveTasks),
    CancelMessageMoveTask(CancelMessageMoveTask),
    ListDeadLetterSourceQueues(ListDeadLetterSourceQueues),
    /// An SQS operation Nimbus does not implement (answered `UnsupportedOperation`).
    Unsupported(String),
}

/// SQS operations Nimbus does not implement (yet): refused with `UnsupportedOperation`.
pub const UNSUPPORTED: &[&str] = &["AddPermission", "RemovePermission"];

fn parse<T: DeserializeOwned>(v: Value) -> Result<T, SqsError> {
    serde_json::from_value(v).map_err(|e| {
        let text = e.to_string();
        match text
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            Some(field) => SqsError::missing(field),
            None => SqsError::InvalidParameterValue(format!("invalid request: {text}")),
        }
    })
}

impl Request {
    /// The request for operation `op` from its input in the JSON protocol's shape.
    pub fn from_input(op: &str, v: Value) -> Result<Self, SqsError> {
        if !v.is_object() {
            return Err(SqsError::Malformed(
                "the request body must be a JSON object".into(),
            ));
        }
        Ok(match op {
            "CreateQueue" => Request::CreateQueue(parse(v)?),
            "GetQueueUrl" => Request::GetQueueUrl(parse(v)?),
            "ListQueues" => Request::ListQueues(parse(v)?),
            "GetQueueAttributes" => Request::GetQueueAttributes(parse(v)?),
            "SetQueueAttributes" => Request::SetQueueAttributes(parse(v)?),
            "SendMessage" => Request::SendMessage(parse(v)?),
            "SendMessageBatch" => Request::SendMessageBatch(parse(v)?),
            "ReceiveMessage" => Request::ReceiveMessage(parse(v)?),
            "DeleteMessage" => Request::DeleteMessage(parse(v)?),
            "DeleteMessageBatch" => Request::DeleteMessageBatch(parse(v)?),
            "ChangeMessageVisibility" => Request::ChangeMessageVisibility(parse(v)?),
            "ChangeMessageVisibilityBatch" => Request::ChangeMessageVisibilityBatch(parse(v)?),
            "PurgeQueue" => Request::PurgeQueue(parse(v)?),
            "DeleteQueue" => Request::DeleteQueue(parse(v)?),
            "TagQueue" => Request::TagQueue(parse(v)?),
            "UntagQueue" => Request::UntagQueue(parse(v)?),
            "ListQueueTags" => Request::ListQueueTags(parse(v)?),
            "StartMessageMoveTask" => Request::StartMessageMoveTask(parse(v)?),
            "ListMessageMoveTasks" => Request::ListMessageMoveTasks(parse(v)?),
            "CancelMessageMoveTask" => Request::CancelMessageMoveTask(parse(v)?),
            "ListDeadLetterSourceQueues" => Request::ListDeadLetterSourceQueues(parse(v)?),
            other if UNSUPPORTED.contains(&other) => Request::Unsupported(other.to_string()),
            other => {
                return Err(SqsError::InvalidAction(format!(
                    "The action {other} is not valid for this endpoint."
                )))
            }
        })
    }

    /// The operation's name (`sqs:<name>` is the action authorised).
    pub fn op(&self) -> &str {
        match self {
            Request::CreateQueue(_) => "CreateQueue",
            Request::GetQueueUrl(_) => "GetQueueUrl",
            Request::ListQueues(_) => "ListQueues",
            Request::GetQueueAttributes(_) => "GetQueueAttributes",
            Request::SetQueueAttributes(_) => "SetQueueAttributes",
            Request::SendMessage(_) => "SendMessage",
            Request::SendMessageBatch(_) => "SendMessageBatch",
            Request::ReceiveMessage(_) => "ReceiveMessage",
            Request::DeleteMessage(_) => "DeleteMessage",
            Request::DeleteMessageBatch(_) => "DeleteMessageBatch",
            Request::ChangeMessageVisibility(_) => "ChangeMessageVisibility",
            Request::ChangeMessageVisibilityBatch(_) => "ChangeMessageVisibilityBatch",
            Request::PurgeQueue(_) => "PurgeQueue",
            Request::DeleteQueue(_) => "DeleteQueue",
            Request::TagQueue(_) => "TagQueue",
            Request::UntagQueue(_) => "UntagQueue",
            Request::ListQueueTags(_) => "ListQueueTags",
            Request::StartMessageMoveTask(_) => "StartMessageMoveTask",
            Request::ListMessageMoveTasks(_) => "ListMessageMoveTasks",
            Request::CancelMessageMoveTask(_) => "CancelMessageMoveTask",
            Request::ListDeadLetterSourceQueues(_) => "ListDeadLetterSourceQueues",
            Request::Unsupported(op) => op,
        }
    }

    /// The queue the request acts on, by name (`None`: every queue, e.g. ListQueues). For
    /// StartMessageMoveTask, the source (dead-letter) queue.
    pub fn queue_name(&self) -> Option<String> {
        let url = |u: &str| Some(queue_name_of(u).to_string());
        match self {
            Request::CreateQueue(r) => Some(r.queue_name.clone()),
            Request::GetQueueUrl(r) => Some(r.queue_name.clone()),
            Request::ListQueues(_) | Request::Unsupported(_) => None,
            Request::GetQueueAttributes(r) => url(&r.queue_url),
            Request::SetQueueAttributes(r) => url(&r.queue_url),
            Request::SendMessage(r) => url(&r.queue_url),
            Request::SendMessageBatch(r) => url(&r.queue_url),
            Request::ReceiveMessage(r) => url(&r.queue_url),
            Request::DeleteMessage(r) => url(&r.queue_url),
            Request::DeleteMessageBatch(r) | Request::ChangeMessageVisibilityBatch(r) => {
                url(&r.queue_url)
            }
            Request::ChangeMessageVisibility(r) => url(&r.queue_url),
            Request::PurgeQueue(r) | Request::DeleteQueue(r) | Request::ListQueueTags(r) => {
                url(&r.queue_url)
            }
            Request::TagQueue(r) => url(&r.queue_url),
            Request::UntagQueue(r) => url(&r.queue_url),
            Request::StartMessageMoveTask(r) => queue_of_arn(&r.source_arn).map(str::to_string),
            Request::ListMessageMoveTasks(r) => queue_of_arn(&r.source_arn).map(str::to_string),
            Request::CancelMessageMoveTask(r) => {
                let (_, source) = parse_task_handle(&r.task_handle)?;
                queue_of_arn(&source).map(str::to_string)
            }
            Request::ListDeadLetterSourceQueues(r) => url(&r.queue_url),
        }
    }
}

/// The queue name of a queue URL (`http(s)://HOST/ACCOUNT/NAME`): its last path segment
/// (a bare name is itself).
pub fn queue_name_of(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// A message move task's handle: base64 of `{"taskId","sourceArn"}`.
pub fn task_handle(task_id: &str, source_arn: &str) -> String {
    use base64::Engine;
    let v = serde_json::json!({ "taskId": task_id, "sourceArn": source_arn });
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

/// The task id and source ARN of a [`task_handle`].
pub fn parse_task_handle(handle: &str) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(handle.as_bytes())
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        v["taskId"].as_str()?.to_string(),
        v["sourceArn"].as_str()?.to_string(),
    ))
}

/// The queue name of a queue ARN `arn:aws:sqs:REGION:ACCOUNT:NAME`.
pub fn queue_of_arn(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let (_partition, service, _region, _account, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (service == "sqs" && !name.is_empty() && !name.contains(':')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_arns_and_missing_fields() {
        assert_eq!(
            queue_name_of("http://localhost:8080/000000000000/jobs"),
            "jobs"
        );
        assert_eq!(queue_name_of("https://h/000000000000/jobs/"), "jobs");
        assert_eq!(queue_name_of("jobs"), "jobs");
        assert_eq!(
            queue_of_arn("arn:aws:sqs:us-east-1:000000000000:jobs"),
            Some("jobs")
        );
        assert_eq!(queue_of_arn("arn:aws:lambda:us-east-1:0:function:f"), None);
        let h = task_handle("t1", "arn:aws:sqs:us-east-1:000000000000:dlq");
        assert_eq!(
            parse_task_handle(&h),
            Some(("t1".into(), "arn:aws:sqs:us-east-1:000000000000:dlq".into()))
        );
        assert_eq!(parse_task_handle("garbage"), None);
        let e = Request::from_input("SendMessage", json!({"MessageBody": "x"})).unwrap_err();
        assert_eq!(e, SqsError::missing("QueueUrl"));
        let e = Request::from_input("Frobnicate", json!({})).unwrap_err();
        assert_eq!(e.code(), "InvalidAction");
        let r = Request::from_input(
            "SendMessage",
            json!({"QueueUrl": "http://h/0/q", "MessageBody": "hi", "DelaySeconds": 3}),
        )
        .unwrap();
        assert_eq!(r.queue_name().as_deref(), Some("q"));
        let Request::SendMessage(s) = r else {
            panic!("not a SendMessage")
        };
        assert_eq!(s.entry.delay_seconds, Some(3));
    }
}
