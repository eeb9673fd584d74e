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

/// A committed transaction and the changes of it that were kept, in the order they were
/// made.
#[derive(Debug, Clone)]
pub struct Txn {
    pub xid: u32,
    /// The LSN of the commit record: the transaction's identity and place in the stream
    /// (known from its Begin on).
    pub commit_lsn: u64,
    /// The end of the commit record: the slot advances here when the transaction is done.
    pub end_lsn: u64,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    /// The kept changes, each with its 1-based index in the transaction.
    pub changes: Vec<(u32, Change)>,
    /// How many changes the transaction has, kept or not.
    pub total: u32,
    /// Every change after the skipped ones was kept (false: the budget ran out in it).
    pub complete: bool,
    /// Taken whole before ([`Budget::upto`]): nothing of it is kept.
    pub taken: bool,
}

/// Which changes of a peek to keep: a large transaction is handed out in parts, so one
/// peek holds at most `room` changes in memory whatever the transaction's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Changes up to here were taken before: (commit LSN, index; `u32::MAX` for the whole
    /// transaction). Transactions committed before it are skipped whole.
    pub upto: Option<(u64, u32)>,
    /// Changes this peek may still keep.
    pub room: usize,
}

/// The transaction being assembled and how many of its first changes to skip.
#[derive(Debug)]
struct Open {
    txn: Txn,
    skip: u32,
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
    open: Option<Open>,
}

impl Assembler {
    /// Feeds one message; a transaction when it was its commit. Changes up to
    /// `budget.upto` are skipped, and at most `budget.room` kept.
    pub fn push(
        &mut self,
        msg: Message,
        budget: &mut Budget,
    ) -> Result<Option<Txn>, pgoutput::DecodeError> {
        match msg {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                let skip = match budget.upto {
                    Some((c, _)) if final_lsn < c => u32::MAX,
                    Some((c, i)) if final_lsn == c => i,
                    _ => 0,
                };
                self.open = Some(Open {
                    txn: Txn {
                        xid,
                        commit_lsn: final_lsn,
                        end_lsn: 0,
                        commit_time,
                        changes: Vec::new(),
                        total: 0,
                        complete: true,
                        taken: skip == u32::MAX,
                    },
                    skip,
                });
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let Open { mut txn, .. } = self
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
            Message::Insert { rel, new } => {
                self.change(budget, rel, Op::Insert, None, Some(new))?
            }
            Message::Update { rel, old, new } => {
                self.change(budget, rel, Op::Update, old, Some(new))?
            }
            Message::Delete { rel, old } => {
                self.change(budget, rel, Op::Delete, Some(old), None)?
            }
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

    /// Counts the open transaction's next change without decoding it when it would not
    /// be kept anyway (taken before, or no room left): true when it was counted so. Reading
    /// a large transaction again for its next part then costs little beyond the transfer.
    pub fn skip_change(&mut self, budget: &Budget) -> bool {
        let Some(open) = self.open.as_mut() else {
            return false;
        };
        let next = open.txn.total + 1;
        if next <= open.skip {
            open.txn.total = next;
            return true;
        }
        if budget.room == 0 {
            open.txn.total = next;
            open.txn.complete = false;
            return true;
        }
        false
    }

    fn change(
        &mut self,
        budget: &mut Budget,
        rel: u32,
        op: Op,
        old: Option<(OldKind, Tuple)>,
        new: Option<Tuple>,
    ) -> Result<(), pgoutput::DecodeError> {
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| err("a change outside a transaction"))?;
        open.txn.total += 1;
        if open.txn.total <= open.skip {
            return Ok(());
        }
        if budget.room == 0 {
            open.txn.complete = false;
            return Ok(());
        }
        let rel = self.relations.get(&rel).cloned().ok_or_else(|| {
            err(&format!(
                "a change of relation {rel} before its Relation message"
            ))
        })?;
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
        budget.room -= 1;
        let index = open.txn.total;
        open.txn.changes.push((index, Change { rel, op, old, new }));
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

    const ALL: Budget = Budget {
        upto: None,
        room: usize::MAX,
    };

    fn feed(a: &mut Assembler, msgs: &[Vec<u8>]) -> Vec<Txn> {
        feed_with(a, msgs, &mut ALL.clone())
    }

    fn feed_with(a: &mut Assembler, msgs: &[Vec<u8>], budget: &mut Budget) -> Vec<Txn> {
        msgs.iter()
            .filter_map(|m| a.push(decode(m).unwrap(), budget).unwrap())
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
        let r = change_record(t, 1, &t.changes[0].1, None, SRC);
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
        let m = change_record(t, 1, &t.changes[0].1, Some(&["id".into()]), SRC);
        assert_eq!(m["eventName"], "MODIFY");
        assert_eq!(m["dynamodb"]["Keys"], json!({"id": {"N": "8"}}));
        assert_eq!(m["dynamodb"]["OldImage"], json!({"id": {"N": "7"}}));
        // The unchanged TOASTed jsonb is left out.
        assert!(m["dynamodb"]["NewImage"].get("doc").is_none());
        assert_eq!(m["dynamodb"]["NewImage"]["paid"], json!({"BOOL": false}));
        assert_eq!(m["dynamodb"]["NewImage"]["amount"], json!({"N": "1.5"}));
        let d = change_record(t, 2, &t.changes[1].1, None, SRC);
        assert_eq!(d["eventName"], "REMOVE");
        assert_eq!(d["eventID"], "0000000000000002-00000002");
        assert_eq!(d["dynamodb"]["Keys"], json!({"id": {"N": "8"}}));
        assert_eq!(d["dynamodb"]["OldImage"], json!({"id": {"N": "8"}}));
        assert!(d["dynamodb"].get("NewImage").is_none());
        let u = change_record(t, 3, &t.changes[2].1, None, SRC);
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
        let r = change_record(t, 1, &t.changes[0].1, Some(&pk), SRC);
        assert_eq!(r["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert_eq!(r["dynamodb"]["Keys"], json!({"id": {"N": "7"}}));
        assert_eq!(r["dynamodb"]["OldImage"]["note"], json!({"S": "a"}));
        assert_eq!(r["dynamodb"]["OldImage"]["amount"], json!({"S": "NaN"}));
        assert_eq!(r["dynamodb"]["NewImage"]["note"], json!({"S": "b"}));
        // Without the primary key, FULL flags every column as the identity.
        let r = change_record(t, 1, &t.changes[0].1, None, SRC);
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
        let mut all = ALL;
        b.push(decode(&begin(1, 0, 1)).unwrap(), &mut all).unwrap();
        assert!(b
            .push(decode(&insert(100, &[Some("1")])).unwrap(), &mut all)
            .is_err());
        assert!(Assembler::default()
            .push(decode(&commit(1, 2, 0)).unwrap(), &mut all)
            .is_err());
        b.push(decode(&orders(b'd')).unwrap(), &mut all).unwrap();
        assert!(
            b.push(decode(&insert(100, &[Some("1")])).unwrap(), &mut all)
                .is_err(),
            "wrong arity"
        );
    }

    #[test]
    fn a_budget_skips_what_was_taken_and_keeps_at_most_room_changes() {
        let row = |i: &'static str| insert(100, &[Some(i), None, None, None, None, None]);
        let msgs = [
            begin(10, 0, 1),
            orders(b'd'),
            row("1"),
            commit(10, 11, 0),
            begin(20, 0, 2),
            row("2"),
            row("3"),
            row("4"),
            row("5"),
            commit(20, 21, 0),
            begin(30, 0, 3),
            row("6"),
            commit(30, 31, 0),
        ];
        // Transaction 10 taken, 20 up to its first change: keep 2 more, then no room.
        let mut budget = Budget {
            upto: Some((20, 1)),
            room: 2,
        };
        let txns = feed_with(&mut Assembler::default(), &msgs, &mut budget);
        assert_eq!(txns.len(), 3);
        assert!(txns[0].taken && txns[0].changes.is_empty());
        let t = &txns[1];
        assert!(!t.taken && !t.complete);
        assert_eq!((t.total, t.end_lsn), (4, 21));
        let kept: Vec<u32> = t.changes.iter().map(|(i, _)| *i).collect();
        assert_eq!(kept, [2, 3]);
        assert!(!txns[2].complete && txns[2].changes.is_empty());
        assert_eq!(budget.room, 0);
        // Counting without decoding gives the same result.
        let mut budget = Budget {
            upto: Some((20, 1)),
            room: 2,
        };
        let mut a = Assembler::default();
        let mut fast = Vec::new();
        for m in &msgs {
            if matches!(m[0], b'I' | b'U' | b'D') && a.skip_change(&budget) {
                continue;
            }
            fast.extend(a.push(decode(m).unwrap(), &mut budget).unwrap());
        }
        assert_eq!(fast.len(), 3);
        assert_eq!((fast[1].total, fast[1].complete), (4, false));
        let kept: Vec<u32> = fast[1].changes.iter().map(|(i, _)| *i).collect();
        assert_eq!(kept, [2, 3]);
        assert!(fast[0].changes.is_empty() && fast[2].changes.is_empty());
        // The rest of 20 in a later peek.
        let mut budget = Budget {
            upto: Some((20, 3)),
            room: 10,
        };
        let txns = feed_with(&mut Assembler::default(), &msgs, &mut budget);
        assert!(txns[1].complete);
        assert_eq!(
            txns[1].changes.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [4]
        );
        assert_eq!(txns[2].changes.len(), 1);
        // A whole transaction taken before is skipped whole.
        let mut budget = Budget {
            upto: Some((20, u32::MAX)),
            room: 10,
        };
        let txns = feed_with(&mut Assembler::default(), &msgs, &mut budget);
        assert!(txns[1].taken && txns[1].changes.is_empty());
        assert_eq!(txns[2].changes.len(), 1);
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
