//! From pgoutput messages to records: [`Assembler`] groups a peek's messages into
//! committed transactions, [`change_record`] shapes one change like a DynamoDB Streams
//! record (what Lambda users already parse), with values as DynamoDB `AttributeValue`s.
//!
//! Pure, so the record shape is unit-tested without a server.

use super::pgoutput::{self, Message, OldKind, Relation, Tuple, Value as PgValue};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::debug;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    /// DynamoDB Streams' `eventName`.
    pub fn event_name(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "MODIFY",
            Op::Delete => "REMOVE",
        }
    }
}

/// One row change of a committed transaction.
#[derive(Debug, Clone)]
pub struct Change {
    pub rel: Arc<Relation>,
    pub op: Op,
    pub old: Option<(OldKind, Tuple)>,
    pub new: Option<Tuple>,
}

/// A committed transaction and its changes, in the order they were made.
#[derive(Debug, Clone)]
pub struct Txn {
    pub xid: u32,
    /// The LSN of the commit record.
    pub commit_lsn: u64,
    /// The end of the commit record: the slot advances here when the transaction is done.
    pub end_lsn: u64,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    pub changes: Vec<Change>,
}

impl Txn {
    /// Commit time in milliseconds since the Unix epoch.
    pub fn commit_ms(&self) -> i64 {
        (self.commit_time + pgoutput::PG_EPOCH_OFFSET_US).div_euclid(1000)
    }
}

/// Groups messages into transactions. Keeps the relations it saw (pgoutput sends a
/// table's `R` message only before its first change in a decoding session), so one
/// assembler lives as long as one connection.
#[derive(Default)]
pub struct Assembler {
    relations: HashMap<u32, Arc<Relation>>,
    open: Option<Txn>,
}

impl Assembler {
    /// Feeds one message; a transaction when it was its commit.
    pub fn push(&mut self, msg: Message) -> Result<Option<Txn>, pgoutput::DecodeError> {
        match msg {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.open = Some(Txn {
                    xid,
                    commit_lsn: final_lsn,
                    end_lsn: 0,
                    commit_time,
                    changes: Vec::new(),
                });
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let mut txn = self
                    .open
                    .take()
                    .ok_or_else(|| err("a Commit without a Begin"))?;
                txn.commit_lsn = commit_lsn;
                txn.end_lsn = end_lsn;
                txn.commit_time = commit_time;
                return Ok(Some(txn));
            }
            Message::Relation(r) => {
                self.relations.insert(r.oid, Arc::new(r));
            }
            Message::Insert { rel, new } => self.change(rel, Op::Insert, None, Some(new))?,
            Message::Update { rel, old, new } => self.change(rel, Op::Update, old, Some(new))?,
            Message::Delete { rel, old } => self.change(rel, Op::Delete, Some(old), None)?,
            Message::Truncate { rels, .. } => {
                debug!(relations = ?rels, "postgres source: TRUNCATE is not delivered");
            }
            Message::Origin { name, .. } => debug!(origin = %name, "postgres source: origin"),
            Message::Type { oid, name, .. } => debug!(oid, %name, "postgres source: type"),
            Message::Other(tag) => {
                debug!(tag = %(tag as char), "postgres source: message skipped")
            }
        }
        Ok(None)
    }

    fn change(
        &mut self,
        rel: u32,
        op: Op,
        old: Option<(OldKind, Tuple)>,
        new: Option<Tuple>,
    ) -> Result<(), pgoutput::DecodeError> {
        let rel = self.relations.get(&rel).cloned().ok_or_else(|| {
            err(&format!(
                "a change of relation {rel} before its Relation message"
            ))
        })?;
        let txn = self
            .open
            .as_mut()
            .ok_or_else(|| err("a change outside a transaction"))?;
        for t in old.iter().map(|(_, t)| t).chain(new.iter()) {
            if t.len() != rel.columns.len() {
                return Err(err(&format!(
                    "a row of {} has {} values for {} columns",
                    rel.qualified_name(),
                    t.len(),
                    rel.columns.len()
                )));
            }
        }
        txn.changes.push(Change { rel, op, old, new });
        Ok(())
    }
}

fn err(m: &str) -> pgoutput::DecodeError {
    pgoutput::DecodeError(m.to_string())
}

/// The record id and `SequenceNumber`: the commit's end LSN as 16 hex digits, `-`, the
/// change's 1-based index in its transaction as 8 digits. Sorts in commit order and is
/// unique per change.
pub fn change_id(end_lsn: u64, index: u32) -> String {
    format!("{end_lsn:016X}-{index:08}")
}

/// A DynamoDB Streams-shaped record of change number `index` (1-based) of `txn`.
/// `primary_key`: the table's primary-key columns, used for `Keys` when the table's
/// replica identity is FULL (pgoutput then flags every column as a key).
pub fn change_record(
    txn: &Txn,
    index: u32,
    change: &Change,
    primary_key: Option<&[String]>,
    event_source: &str,
) -> Value {
    let rel = &change.rel;
    let table = rel.qualified_name();
    let id = change_id(txn.end_lsn, index);
    let full = rel.replica_identity == b'f';
    let is_key = |i: usize| -> bool {
        match primary_key {
            Some(pk) if full && !pk.is_empty() => pk.contains(&rel.columns[i].name),
            _ => rel.columns[i].key,
        }
    };
    let mut size = 0usize;
    let mut dynamodb = Map::new();
    dynamodb.insert(
        "ApproximateCreationDateTime".into(),
        json!(txn.commit_ms().div_euclid(1000)),
    );
    // The keys come from the row as it is now (the old row for a delete).
    let key_row = match (&change.new, &change.old) {
        (Some(new), _) => Some(new),
        (None, Some((_, old))) => Some(old),
        _ => None,
    };
    let keys = key_row
        .map(|row| image(rel, row, &is_key, &mut 0))
        .unwrap_or_default();
    dynamodb.insert("Keys".into(), Value::Object(keys));
    if let Some(new) = &change.new {
        dynamodb.insert(
            "NewImage".into(),
            Value::Object(image(rel, new, &|_| true, &mut size)),
        );
    }
    if let Some((kind, old)) = &change.old {
        // With REPLICA IDENTITY DEFAULT/INDEX only the key columns of the old row are
        // known (the others arrive as NULL): the old image holds just those.
        let keep = |i: usize| *kind == OldKind::Full || rel.columns[i].key;
        dynamodb.insert(
            "OldImage".into(),
            Value::Object(image(rel, old, &keep, &mut size)),
        );
    }
    dynamodb.insert("SequenceNumber".into(), json!(id));
    dynamodb.insert("SizeBytes".into(), json!(size));
    dynamodb.insert(
        "StreamViewType".into(),
        json!(if full {
            "NEW_AND_OLD_IMAGES"
        } else {
            "NEW_IMAGE"
        }),
    );
    json!({
        "eventID": id,
        "eventName": change.op.event_name(),
        "eventVersion": "1.1",
        "eventSource": event_source,
        "awsRegion": "us-east-1",
        "eventSourceARN": format!("arn:nimbus:postgres:us-east-1:000000000000:table/{table}"),
        "dynamodb": Value::Object(dynamodb),
        "table": table,
        "transaction": {"xid": txn.xid, "commitLsn": pgoutput::format_lsn(txn.commit_lsn)},
    })
}

/// The columns of `row` that `keep` selects, as AttributeValues; unchanged TOASTed
/// values are left out (pgoutput does not send them). Adds the value bytes to `size`.
fn image(
    rel: &Relation,
    row: &Tuple,
    keep: &dyn Fn(usize) -> bool,
    size: &mut usize,
) -> Map<String, Value> {
    let mut m = Map::new();
    for (i, (col, v)) in rel.columns.iter().zip(row).enumerate() {
        if !keep(i) {
            continue;
        }
        let av = match v {
            PgValue::UnchangedToast => continue,
            PgValue::Null => json!({"NULL": true}),
            PgValue::Text(t) => {
                *size += col.name.len() + t.len();
                attribute(col.type_oid, t)
            }
            PgValue::Binary(b) => {
                *size += col.name.len() + b.len();
                json!({ "B": base64::engine::general_purpose::STANDARD.encode(b) })
            }
        };
        m.insert(col.name.clone(), av);
    }
    m
}

/// Type OIDs with a DynamoDB type other than `S`.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const NUMERIC: u32 = 1700;
}

/// A value in PostgreSQL's text output as a DynamoDB AttributeValue: numbers `N`
/// (`NaN` and infinities, which DynamoDB cannot hold, as `S`), bool `BOOL`, bytea `B`
/// (base64), everything else — text, uuid, dates, timestamps, json, arrays — `S`.
pub fn attribute(type_oid: u32, text: &[u8]) -> Value {
    let s = String::from_utf8_lossy(text);
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID | oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC
            if is_finite_number(&s) =>
        {
            json!({ "N": s })
        }
        oid::BOOL => json!({ "BOOL": s == "t" || s == "true" }),
        oid::BYTEA => match decode_bytea_hex(&s) {
            Some(b) => json!({ "B": base64::engine::general_purpose::STANDARD.encode(b) }),
            None => json!({ "S": s }),
        },
        _ => json!({ "S": s }),
    }
}

fn is_finite_number(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
}

/// bytea's hex output (`\x0aff`); `None` for another format.
fn decode_bytea_hex(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::pgoutput::{decode, fixtures::*};
    use super::*;

    const SRC: &str = "nimbus:postgres";

    fn feed(a: &mut Assembler, msgs: &[Vec<u8>]) -> Vec<Txn> {
        msgs.iter()
            .filter_map(|m| a.push(decode(m).unwrap()).unwrap())
            .collect()
    }

    fn orders(ident: u8) -> Vec<u8> {
        let all = ident == b'f';
        relation(
            100,
            "public",
            "orders",
            ident,
            &[
                (true, "id", 23),
                (all, "note", 25),
                (all, "paid", 16),
                (all, "blob", 17),
                (all, "doc", 3802),
                (all, "amount", 1700),
            ],
        )
    }

    #[test]
    fn insert_record_has_the_dynamodb_streams_shape() {
        let mut a = Assembler::default();
        let txns = feed(
            &mut a,
            &[
                begin(0x16B3700, 1_000_000, 735),
                orders(b'd'),
                insert(
                    100,
                    &[
                        Some("7"),
                        Some("hi"),
                        Some("t"),
                        Some("\\x00ff"),
                        Some("{\"a\": 1}"),
                        None,
                    ],
                ),
                commit(0x16B3700, 0x16B3748, 1_000_000),
            ],
        );
        assert_eq!(txns.len(), 1);
        let t = &txns[0];
        assert_eq!(t.commit_ms(), 946_684_801_000);
        let r = change_record(t, 1, &t.changes[0], None, SRC);
        assert_eq!(
            r,
            json!({
                "eventID": "00000000016B3748-00000001",
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "nimbus:postgres",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:nimbus:postgres:us-east-1:000000000000:table/public.orders",
                "dynamodb": {
                    "ApproximateCreationDateTime": 946_684_801,
                    "Keys": {"id": {"N": "7"}},
                    "NewImage": {
                        "id": {"N": "7"},
                        "note": {"S": "hi"},
                        "paid": {"BOOL": true},
                        "blob": {"B": "AP8="},
                        "doc": {"S": "{\"a\": 1}"},
                        "amount": {"NULL": true}
                    },
                    "SequenceNumber": "00000000016B3748-00000001",
                    "SizeBytes": 2 + 1 + 4 + 2 + 4 + 1 + 4 + 6 + 3 + 8,
                    "StreamViewType": "NEW_IMAGE"
                },
                "table": "public.orders",
                "transaction": {"xid": 735, "commitLsn": "0/16B3700"}
            })
        );
    }

    #[test]
    fn default_identity_old_image_holds_only_the_key() {
        let mut a = Assembler::default();
        let txns = feed(
            &mut a,
            &[
                begin(1, 0, 1),
                orders(b'd'),
                update(
                    100,
                    Some((b'K', &[Some("7"), None, None, None, None, None])),
                    &[
                        Some("8"),
                        Some("x"),
                        Some("f"),
                        None,
                        Some("\u{0}u"),
                        Some("1.5"),
                    ],
                ),
                delete(100, b'K', &[Some("8"), None, None, None, None, None]),
                update(100, None, &[Some("9"), None, None, None, None, Some("2")]),
                commit(1, 2, 0),
            ],
        );
        let t = &txns[0];
        let m = change_record(t, 1, &t.changes[0], Some(&["id".into()]), SRC);
        assert_eq!(m["eventName"], "MODIFY");
        assert_eq!(m["dynamodb"]["Keys"], json!({"id": {"N": "8"}}));
        assert_eq!(m["dynamodb"]["OldImage"], json!({"id": {"N": "7"}}));
        // The unchanged TOASTed jsonb is left out.
        assert!(m["dynamodb"]["NewImage"].get("doc").is_none());
        assert_eq!(m["dynamodb"]["NewImage"]["paid"], json!({"BOOL": false}));
        assert_eq!(m["dynamodb"]["NewImage"]["amount"], json!({"N": "1.5"}));
        let d = change_record(t, 2, &t.changes[1], None, SRC);
        assert_eq!(d["eventName"], "REMOVE");
        assert_eq!(d["eventID"], "0000000000000002-00000002");
        assert_eq!(d["dynamodb"]["Keys"], json!({"id": {"N": "8"}}));
        assert_eq!(d["dynamodb"]["OldImage"], json!({"id": {"N": "8"}}));
        assert!(d["dynamodb"].get("NewImage").is_none());
        let u = change_record(t, 3, &t.changes[2], None, SRC);
        assert!(u["dynamodb"].get("OldImage").is_none());
    }

    #[test]
    fn full_identity_has_old_images_and_primary_keys() {
        let mut a = Assembler::default();
        let row = [Some("7"), Some("a"), Some("t"), None, None, Some("NaN")];
        let txns = feed(
            &mut a,
            &[
                begin(1, 0, 1),
                orders(b'f'),
                update(
                    100,
                    Some((b'O', &row)),
                    &[Some("7"), Some("b"), Some("t"), None, None, Some("1")],
                ),
                commit(1, 2, 0),
            ],
        );
        let t = &txns[0];
        let pk = ["id".to_string()];
        let r = change_record(t, 1, &t.changes[0], Some(&pk), SRC);
        assert_eq!(r["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert_eq!(r["dynamodb"]["Keys"], json!({"id": {"N": "7"}}));
        assert_eq!(r["dynamodb"]["OldImage"]["note"], json!({"S": "a"}));
        assert_eq!(r["dynamodb"]["OldImage"]["amount"], json!({"S": "NaN"}));
        assert_eq!(r["dynamodb"]["NewImage"]["note"], json!({"S": "b"}));
        // Without the primary key, FULL flags every column as the identity.
        let r = change_record(t, 1, &t.changes[0], None, SRC);
        assert_eq!(r["dynamodb"]["Keys"].as_object().unwrap().len(), 6);
    }

    #[test]
    fn relations_persist_across_transactions_and_errors_are_reported() {
        let mut a = Assembler::default();
        let txns = feed(
            &mut a,
            &[
                begin(1, 0, 1),
                orders(b'd'),
                commit(1, 2, 0),
                begin(3, 0, 2),
                insert(100, &[Some("1"), None, None, None, None, None]),
                insert(100, &[Some("2"), None, None, None, None, None]),
                commit(3, 4, 0),
            ],
        );
        assert_eq!(txns.len(), 2);
        assert_eq!((txns[0].changes.len(), txns[1].changes.len()), (0, 2));
        let mut b = Assembler::default();
        b.push(decode(&begin(1, 0, 1)).unwrap()).unwrap();
        assert!(b.push(decode(&insert(100, &[Some("1")])).unwrap()).is_err());
        assert!(Assembler::default()
            .push(decode(&commit(1, 2, 0)).unwrap())
            .is_err());
        b.push(decode(&orders(b'd')).unwrap()).unwrap();
        assert!(
            b.push(decode(&insert(100, &[Some("1")])).unwrap()).is_err(),
            "wrong arity"
        );
    }

    #[test]
    fn attribute_values() {
        assert_eq!(attribute(20, b"-9000000000"), json!({"N": "-9000000000"}));
        assert_eq!(attribute(701, b"1.5e+300"), json!({"N": "1.5e+300"}));
        assert_eq!(attribute(701, b"Infinity"), json!({"S": "Infinity"}));
        assert_eq!(attribute(16, b"f"), json!({"BOOL": false}));
        assert_eq!(attribute(17, b"\\x"), json!({"B": ""}));
        assert_eq!(attribute(17, b"\\xzz"), json!({"S": "\\xzz"}));
        assert_eq!(
            attribute(1184, b"2024-01-02 03:04:05.5+00"),
            json!({"S": "2024-01-02 03:04:05.5+00"})
        );
        assert_eq!(change_id(0x16B3748, 12), "00000000016B3748-00000012");
        assert!(change_id(0xFF, 2) < change_id(0x100, 1));
    }
}
