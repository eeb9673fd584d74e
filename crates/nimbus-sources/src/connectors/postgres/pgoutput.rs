//! A decoder for the messages of PostgreSQL's `pgoutput` logical decoding plugin,
//! protocol version 1 (PostgreSQL docs, "Logical Replication Message Formats").
//!
//! Pure: bytes in, [`Message`]s out, so every message kind is unit-tested on byte fixtures
//! without a server. Only what change data capture needs is kept; messages this connector
//! does not use (logical decoding messages, streamed-transaction messages of protocol ≥ 2)
//! decode to [`Message::Other`] so a newer server does not break the stream.

use std::fmt;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A message that could not be decoded: the stream is not what protocol version 1 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pgoutput: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity (the key): bit 1 of the column flags.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A table as the `R` message describes it (sent before its first change in a decoding
/// session and again when its definition changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// The schema (pgoutput sends an empty string for `pg_catalog`).
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.table`.
    pub fn qualified_name(&self) -> String {
        let schema = if self.namespace.is_empty() {
            "pg_catalog"
        } else {
            &self.namespace
        };
        format!("{schema}.{}", self.name)
    }
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value that did not change: pgoutput does not send it.
    UnchangedToast,
    /// The type's text output.
    Text(Vec<u8>),
    /// The type's binary output (only with the `binary` option, never asked for here).
    Binary(Vec<u8>),
}

/// A row: one value per column of its relation, in column order.
pub type Tuple = Vec<Value>;

/// Which old row an update or delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: only the replica identity columns are meaningful (the others are NULL).
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        /// The LSN of the commit record.
        final_lsn: u64,
        /// Microseconds since 2000-01-01 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        /// The end of the commit record: where the slot advances to once the
        /// transaction is done.
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        lsn: u64,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        rel: u32,
        new: Tuple,
    },
    Update {
        rel: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        rel: u32,
        old: (OldKind, Tuple),
    },
    Truncate {
        options: u8,
        rels: Vec<u32>,
    },
    /// A message kind this connector does not use (its tag byte).
    Other(u8),
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                DecodeError(format!(
                    "message ends inside {what} (offset {}, {} bytes)",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(self.u32(what)? as i32)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(self.u64(what)? as i64)
    }

    /// A NUL-terminated string.
    fn cstr(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError(format!("{what} is not NUL-terminated")))?;
        let s = String::from_utf8_lossy(&rest[..nul]).into_owned();
        self.pos += nul + 1;
        Ok(s)
    }
}

/// Decodes one pgoutput message (one row of `pg_logical_slot_peek_binary_changes`).
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(buf);
    let tag = r.u8("the message tag")?;
    let msg = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("Begin.final_lsn")?,
            commit_time: r.i64("Begin.timestamp")?,
            xid: r.u32("Begin.xid")?,
        },
        b'C' => {
            let _flags = r.u8("Commit.flags")?;
            Message::Commit {
                commit_lsn: r.u64("Commit.lsn")?,
                end_lsn: r.u64("Commit.end_lsn")?,
                commit_time: r.i64("Commit.timestamp")?,
            }
        }
        b'O' => Message::Origin {
            lsn: r.u64("Origin.lsn")?,
            name: r.cstr("Origin.name")?,
        },
        b'R' => Message::Relation(relation(&mut r)?),
        b'Y' => Message::Type {
            oid: r.u32("Type.oid")?,
            namespace: r.cstr("Type.namespace")?,
            name: r.cstr("Type.name")?,
        },
        b'I' => {
            let rel = r.u32("Insert.relation")?;
            expect(&mut r, b'N', "Insert")?;
            Message::Insert {
                rel,
                new: tuple(&mut r)?,
            }
        }
        b'U' => update(&mut r)?,
        b'D' => {
            let rel = r.u32("Delete.relation")?;
            let kind = old_kind(r.u8("Delete old tuple kind")?)
                .ok_or_else(|| DecodeError("Delete without a K or O tuple".into()))?;
            Message::Delete {
                rel,
                old: (kind, tuple(&mut r)?),
            }
        }
        b'T' => {
            let n = r.u32("Truncate.count")?;
            let options = r.u8("Truncate.options")?;
            let rels = (0..n)
                .map(|_| r.u32("Truncate.relation"))
                .collect::<Result<_, _>>()?;
            Message::Truncate { options, rels }
        }
        other => return Ok(Message::Other(other)),
    };
    Ok(msg)
}

fn expect(r: &mut Reader<'_>, want: u8, what: &str) -> Result<(), DecodeError> {
    let got = r.u8(what)?;
    if got == want {
        Ok(())
    } else {
        Err(DecodeError(format!(
            "{what}: expected {:?}, got {:?}",
            want as char, got as char
        )))
    }
}

fn old_kind(b: u8) -> Option<OldKind> {
    match b {
        b'K' => Some(OldKind::Key),
        b'O' => Some(OldKind::Full),
        _ => None,
    }
}

fn update(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let rel = r.u32("Update.relation")?;
    let first = r.u8("Update tuple kind")?;
    let (old, next) = match old_kind(first) {
        Some(kind) => {
            let old = tuple(r)?;
            (Some((kind, old)), r.u8("Update new tuple kind")?)
        }
        None => (None, first),
    };
    if next != b'N' {
        return Err(DecodeError(format!(
            "Update: expected 'N', got {:?}",
            next as char
        )));
    }
    Ok(Message::Update {
        rel,
        old,
        new: tuple(r)?,
    })
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let oid = r.u32("Relation.oid")?;
    let namespace = r.cstr("Relation.namespace")?;
    let name = r.cstr("Relation.name")?;
    let replica_identity = r.u8("Relation.replica_identity")?;
    let n = r.u16("Relation.columns")?;
    let mut columns = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let flags = r.u8("Column.flags")?;
        columns.push(Column {
            key: flags & 1 == 1,
            name: r.cstr("Column.name")?,
            type_oid: r.u32("Column.type")?,
            type_modifier: r.i32("Column.modifier")?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let n = r.u16("TupleData.columns")?;
    let mut values = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let v = match r.u8("TupleData kind")? {
            b'n' => Value::Null,
            b'u' => Value::UnchangedToast,
            b't' => {
                let len = r.u32("TupleData length")? as usize;
                Value::Text(r.take(len, "a text value")?.to_vec())
            }
            b'b' => {
                let len = r.u32("TupleData length")? as usize;
                Value::Binary(r.take(len, "a binary value")?.to_vec())
            }
            other => {
                return Err(DecodeError(format!(
                    "unknown TupleData kind {:?}",
                    other as char
                )))
            }
        };
        values.push(v);
    }
    Ok(values)
}

/// `X/Y`, PostgreSQL's text form of an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses PostgreSQL's `X/Y` text form of an LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders of pgoutput messages, byte for byte as the server writes them.

    pub fn begin(final_lsn: u64, time: i64, xid: u32) -> Vec<u8> {
        let mut b = vec![b'B'];
        b.extend(final_lsn.to_be_bytes());
        b.extend(time.to_be_bytes());
        b.extend(xid.to_be_bytes());
        b
    }

    pub fn commit(lsn: u64, end: u64, time: i64) -> Vec<u8> {
        let mut b = vec![b'C', 0];
        b.extend(lsn.to_be_bytes());
        b.extend(end.to_be_bytes());
        b.extend(time.to_be_bytes());
        b
    }

    fn cstr(b: &mut Vec<u8>, s: &str) {
        b.extend(s.as_bytes());
        b.push(0);
    }

    /// `cols`: (key, name, type oid).
    pub fn relation(
        oid: u32,
        ns: &str,
        name: &str,
        ident: u8,
        cols: &[(bool, &str, u32)],
    ) -> Vec<u8> {
        let mut b = vec![b'R'];
        b.extend(oid.to_be_bytes());
        cstr(&mut b, ns);
        cstr(&mut b, name);
        b.push(ident);
        b.extend((cols.len() as u16).to_be_bytes());
        for (key, n, ty) in cols {
            b.push(u8::from(*key));
            cstr(&mut b, n);
            b.extend(ty.to_be_bytes());
            b.extend((-1i32).to_be_bytes());
        }
        b
    }

    /// `vals`: `None` = NULL, `Some("\u{0}u")` = unchanged TOAST, else text.
    pub fn tuple(vals: &[Option<&str>]) -> Vec<u8> {
        let mut b = (vals.len() as u16).to_be_bytes().to_vec();
        for v in vals {
            match v {
                None => b.push(b'n'),
                Some("\u{0}u") => b.push(b'u'),
                Some(s) => {
                    b.push(b't');
                    b.extend((s.len() as u32).to_be_bytes());
                    b.extend(s.as_bytes());
                }
            }
        }
        b
    }

    pub fn insert(rel: u32, new: &[Option<&str>]) -> Vec<u8> {
        let mut b = vec![b'I'];
        b.extend(rel.to_be_bytes());
        b.push(b'N');
        b.extend(tuple(new));
        b
    }

    pub fn update(rel: u32, old: Option<(u8, &[Option<&str>])>, new: &[Option<&str>]) -> Vec<u8> {
        let mut b = vec![b'U'];
        b.extend(rel.to_be_bytes());
        if let Some((k, old)) = old {
            b.push(k);
            b.extend(tuple(old));
        }
        b.push(b'N');
        b.extend(tuple(new));
        b
    }

    pub fn delete(rel: u32, kind: u8, old: &[Option<&str>]) -> Vec<u8> {
        let mut b = vec![b'D'];
        b.extend(rel.to_be_bytes());
        b.push(kind);
        b.extend(tuple(old));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{begin, commit, delete, insert, relation, update};
    use super::{decode, format_lsn, parse_lsn, Message, OldKind, Value};

    #[test]
    fn begin_and_commit() {
        assert_eq!(
            decode(&begin(0x16B_3748, 7_000_000, 42)).unwrap(),
            Message::Begin {
                final_lsn: 0x16B_3748,
                commit_time: 7_000_000,
                xid: 42
            }
        );
        assert_eq!(
            decode(&commit(0x10, 0x20, -5)).unwrap(),
            Message::Commit {
                commit_lsn: 0x10,
                end_lsn: 0x20,
                commit_time: -5
            }
        );
    }

    #[test]
    fn relation_with_key_flags() {
        let m = decode(&relation(
            16384,
            "public",
            "orders",
            b'd',
            &[(true, "id", 23), (false, "note", 25)],
        ))
        .unwrap();
        let Message::Relation(r) = m else {
            panic!("{m:?}")
        };
        assert_eq!(r.oid, 16384);
        assert_eq!(r.qualified_name(), "public.orders");
        assert_eq!(r.replica_identity, b'd');
        assert_eq!(r.columns.len(), 2);
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(
            (r.columns[1].name.as_str(), r.columns[1].type_oid),
            ("note", 25)
        );
        assert_eq!(r.columns[0].type_modifier, -1);
    }

    #[test]
    fn tuples_with_null_toast_and_text() {
        let m = decode(&insert(7, &[Some("1"), None, Some("\u{0}u"), Some("")])).unwrap();
        assert_eq!(
            m,
            Message::Insert {
                rel: 7,
                new: vec![
                    Value::Text(b"1".to_vec()),
                    Value::Null,
                    Value::UnchangedToast,
                    Value::Text(Vec::new())
                ]
            }
        );
    }

    #[test]
    fn updates_with_and_without_old_tuples() {
        let plain = decode(&update(7, None, &[Some("1")])).unwrap();
        assert!(
            matches!(plain, Message::Update { old: None, .. }),
            "{plain:?}"
        );
        let key = decode(&update(7, Some((b'K', &[Some("1")])), &[Some("2")])).unwrap();
        let Message::Update {
            old: Some((OldKind::Key, old)),
            new,
            ..
        } = key
        else {
            panic!("{key:?}")
        };
        assert_eq!(
            (old, new),
            (
                vec![Value::Text(b"1".to_vec())],
                vec![Value::Text(b"2".to_vec())]
            )
        );
        let full = decode(&update(7, Some((b'O', &[None])), &[None])).unwrap();
        assert!(matches!(
            full,
            Message::Update {
                old: Some((OldKind::Full, _)),
                ..
            }
        ));
    }

    #[test]
    fn deletes_truncates_origins_types() {
        assert_eq!(
            decode(&delete(9, b'K', &[Some("5")])).unwrap(),
            Message::Delete {
                rel: 9,
                old: (OldKind::Key, vec![Value::Text(b"5".to_vec())])
            }
        );
        assert!(decode(&delete(9, b'X', &[])).is_err());
        let mut t = vec![b'T'];
        t.extend(2u32.to_be_bytes());
        t.push(1);
        t.extend(10u32.to_be_bytes());
        t.extend(11u32.to_be_bytes());
        assert_eq!(
            decode(&t).unwrap(),
            Message::Truncate {
                options: 1,
                rels: vec![10, 11]
            }
        );
        let mut o = vec![b'O'];
        o.extend(5u64.to_be_bytes());
        o.extend(b"node1\0");
        assert_eq!(
            decode(&o).unwrap(),
            Message::Origin {
                lsn: 5,
                name: "node1".into()
            }
        );
        let mut y = vec![b'Y'];
        y.extend(99u32.to_be_bytes());
        y.extend(b"public\0mood\0");
        assert_eq!(
            decode(&y).unwrap(),
            Message::Type {
                oid: 99,
                namespace: "public".into(),
                name: "mood".into()
            }
        );
        assert_eq!(decode(b"M\0\0").unwrap(), Message::Other(b'M'));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let full = insert(7, &[Some("hello"), None]);
        for n in 0..full.len() {
            assert!(decode(&full[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut huge = vec![b'I'];
        huge.extend(7u32.to_be_bytes());
        huge.extend(b"N\0\x01t\xff\xff\xff\xff");
        assert!(decode(&huge).is_err());
        assert!(decode(&relation(1, "s", "t", b'd', &[(true, "a", 23)])[..12]).is_err());
    }

    #[test]
    fn lsn_text_form_round_trips() {
        assert_eq!(format_lsn(0x16B3748), "0/16B3748");
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1A/FF"), Some((0x1A << 32) | 0xFF));
        assert_eq!(format_lsn(parse_lsn("1A/FF").unwrap()), "1A/FF");
        assert_eq!(parse_lsn("nope"), None);
    }
}
