//! FIFO queues in `queues.db` (see `queues.rs` for the tables): deduplication of sends,
//! receives in order per message group, and `ReceiveRequestAttemptId`s.
//!
//! - Every message of a FIFO queue has a group; `fifo_groups` holds each group's head (its
//!   oldest message's `seq`), kept by triggers on `messages`. A receive walks the queue's
//!   groups by head, skips groups with a message in flight (received, still hidden) or
//!   whose head is not visible yet, and takes each chosen group's messages in order.
//! - A message's `SequenceNumber` is its row's `seq` (increasing in the database, so in the
//!   queue and in each group) plus 2^64: a 20-digit decimal of a 128-bit number, as SQS's.
//! - `fifo_dedup` remembers each deduplication id (per queue, or per queue and group with
//!   `DeduplicationScope` `messageGroup`) for 5 minutes with the message it stood for; a send
//!   with a remembered id is accepted and answered with that message's id and sequence
//!   number, and stores nothing. Deleting the message does not forget the id (as SQS).
//! - `receive_attempts` remembers what a receive with a `ReceiveRequestAttemptId` returned
//!   (ids, receipt handles, visibility deadlines) for 5 minutes.

use crate::queues::{dead_letter, decode_message, deliver, QueueInfo, MESSAGE_SELECT};
use crate::queues::{DedupScope, Message, NewMessage, RedrivePolicy};
use crate::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// SQS's deduplication interval (and how long a `ReceiveRequestAttemptId` is honoured).
pub const DEDUP_INTERVAL_MS: i64 = 5 * 60 * 1000;

/// Where a FIFO message's deduplication id counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DedupKey {
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    /// `""` (the queue) or the group (`DeduplicationScope` `messageGroup`).
    pub scope: String,
}

/// The `SequenceNumber` of the message stored at row `seq`.
pub fn sequence_number(seq: i64) -> String {
    ((1u128 << 64) + seq.max(0) as u128).to_string()
}

/// SQS's rule for `MessageGroupId`, `MessageDeduplicationId` and
/// `ReceiveRequestAttemptId`: 1-128 letters, digits and punctuation.
pub fn valid_fifo_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// What a message sent to queue `q` is deduplicated by (`None`: a standard queue).
pub(crate) fn check_new(q: &QueueInfo, m: &NewMessage) -> Result<Option<DedupKey>> {
    if !q.settings.fifo {
        return Ok(None);
    }
    let bad = |m: &str| Err(StoreError::InvalidInput(m.into()));
    let Some(group) = m.group_id.clone() else {
        return bad("a message sent to a FIFO queue needs a message group id");
    };
    if !valid_fifo_token(&group) {
        return bad("a message group id is 1-128 letters, digits or punctuation");
    }
    let dedup = match &m.dedup_id {
        Some(d) if valid_fifo_token(d) => d.clone(),
        Some(_) => return bad("a deduplication id is 1-128 letters, digits or punctuation"),
        None if q.settings.content_based_dedup => hex::encode(Sha256::digest(m.body.as_bytes())),
        None => {
            return bad(
                "the queue has no content-based deduplication: give a message deduplication id",
            )
        }
    };
    let scope = match q.settings.dedup_scope {
        DedupScope::Queue => String::new(),
        DedupScope::MessageGroup => group.clone(),
    };
    Ok(Some(DedupKey {
        group_id: Some(group),
        dedup_id: Some(dedup),
        scope,
    }))
}

/// Forgets the deduplication ids and receive attempts of queue `name` older than the
/// interval.
pub(crate) fn forget_expired(tx: &Connection, name: &str, now_ms: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM fifo_dedup WHERE queue = ?1 AND expires_ms <= ?2")?
        .execute(params![name, now_ms])?;
    tx.prepare_cached("DELETE FROM receive_attempts WHERE queue = ?1 AND expires_ms <= ?2")?
        .execute(params![name, now_ms])?;
    Ok(())
}

/// The message (id, seq) a deduplication id stands for, if sent within the interval.
pub(crate) fn duplicate_of(
    tx: &Connection,
    name: &str,
    key: &DedupKey,
    now_ms: i64,
) -> Result<Option<(String, i64)>> {
    Ok(tx
        .prepare_cached(
            "SELECT message_id, seq FROM fifo_dedup
             WHERE queue = ?1 AND scope = ?2 AND dedup_id = ?3 AND expires_ms > ?4",
        )?
        .query_row(params![name, key.scope, key.dedup_id, now_ms], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

pub(crate) fn remember_dedup(
    tx: &Connection,
    name: &str,
    key: &DedupKey,
    id: &str,
    seq: i64,
    now_ms: i64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO fifo_dedup (queue, scope, dedup_id, message_id, seq, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        name,
        key.scope,
        key.dedup_id,
        id,
        seq,
        now_ms + DEDUP_INTERVAL_MS
    ])?;
    Ok(())
}

/// A FIFO queue's receive: up to `max` messages, group after group (oldest head first),
/// each group's in order, skipping groups with a message in flight. A message received
/// `maxReceiveCount` times moves to the dead-letter queue and its group goes on.
pub(crate) fn receive(
    tx: &Connection,
    name: &str,
    max: usize,
    visibility: i64,
    redrive: Option<&RedrivePolicy>,
    now_ms: i64,
) -> Result<Vec<Message>> {
    let mut out: Vec<Message> = Vec::new();
    loop {
        let groups: Vec<String> = {
            let mut st = tx.prepare_cached(
                "SELECT g.group_id FROM fifo_groups g JOIN messages h ON h.seq = g.head_seq
                 WHERE g.queue = ?1 AND h.visible_at_ms <= ?2
                   AND NOT EXISTS (SELECT 1 FROM messages f
                       WHERE f.queue = ?1 AND f.group_id = g.group_id
                         AND f.group_id IS NOT NULL AND f.receipt IS NOT NULL
                         AND f.visible_at_ms > ?2)
                 ORDER BY g.head_seq LIMIT ?3",
            )?;
            let rows = st.query_map(params![name, now_ms, (max - out.len()) as i64], |r| {
                r.get(0)
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if groups.is_empty() {
            break;
        }
        let mut moved = false;
        for group in groups {
            if out.len() >= max {
                break;
            }
            let messages: Vec<Message> = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {MESSAGE_SELECT} FROM messages WHERE queue = ?1 AND group_id = ?2
                     ORDER BY seq LIMIT ?3"
                ))?;
                let rows = st.query_map(
                    params![name, group, (max - out.len()) as i64],
                    decode_message,
                )?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for m in messages {
                if m.visible_at_ms > now_ms {
                    // Delayed: it and what follows it wait.
                    break;
                }
                if let Some(r) = redrive.filter(|r| m.receive_count >= r.max_receive_count) {
                    dead_letter(tx, name, r, &m, now_ms)?;
                    moved = true;
                    continue;
                }
                out.push(deliver(tx, m, visibility, now_ms)?);
            }
        }
        if !moved || out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// One message a receive attempt returned.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Attempted {
    pub receipt: String,
    pub visible_at_ms: i64,
}

/// The messages receive attempt `attempt` returned, their visibility timeout started
/// again — if it was made within the interval and none of them was deleted, received
/// again or had its visibility changed since. `None`: receive anew.
pub(crate) fn replay(
    tx: &Connection,
    name: &str,
    attempt: &str,
    visibility: i64,
    now_ms: i64,
) -> Result<Option<Vec<Message>>> {
    forget_expired(tx, name, now_ms)?;
    let Some(stored): Option<String> = tx
        .prepare_cached(
            "SELECT messages FROM receive_attempts WHERE queue = ?1 AND attempt_id = ?2",
        )?
        .query_row(params![name, attempt], |r| r.get(0))
        .optional()?
    else {
        return Ok(None);
    };
    let attempted: Vec<Attempted> = serde_json::from_str(&stored).unwrap_or_default();
    if attempted.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(attempted.len());
    for a in &attempted {
        let m = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_SELECT} FROM messages WHERE queue = ?1 AND receipt = ?2"
            ))?
            .query_row(params![name, a.receipt], decode_message)
            .optional()?;
        match m {
            Some(m) if m.visible_at_ms == a.visible_at_ms => out.push(m),
            _ => return Ok(None),
        }
    }
    let visible_at = now_ms + visibility * 1000;
    for m in &mut out {
        tx.prepare_cached("UPDATE messages SET visible_at_ms = ?2 WHERE id = ?1")?
            .execute(params![m.id, visible_at])?;
        m.visible_at_ms = visible_at;
    }
    let again: Vec<Attempted> = out
        .iter()
        .map(|m| Attempted {
            receipt: m.receipt.clone().unwrap_or_default(),
            visible_at_ms: visible_at,
        })
        .collect();
    tx.prepare_cached(
        "UPDATE receive_attempts SET messages = ?3 WHERE queue = ?1 AND attempt_id = ?2",
    )?
    .execute(params![
        name,
        attempt,
        serde_json::to_string(&again).unwrap_or_default()
    ])?;
    tracing::debug!(
        queue = name,
        attempt,
        messages = out.len(),
        "receive attempt replayed"
    );
    Ok(Some(out))
}

/// Remembers what receive attempt `attempt` returned (nothing: a retry receives anew).
pub(crate) fn remember_attempt(
    tx: &Connection,
    name: &str,
    attempt: &str,
    got: &[Message],
    now_ms: i64,
) -> Result<()> {
    if got.is_empty() {
        tx.prepare_cached("DELETE FROM receive_attempts WHERE queue = ?1 AND attempt_id = ?2")?
            .execute(params![name, attempt])?;
        return Ok(());
    }
    let attempted: Vec<Attempted> = got
        .iter()
        .map(|m| Attempted {
            receipt: m.receipt.clone().unwrap_or_default(),
            visible_at_ms: m.visible_at_ms,
        })
        .collect();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO receive_attempts (queue, attempt_id, expires_ms, messages)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        name,
        attempt,
        now_ms + DEDUP_INTERVAL_MS,
        serde_json::to_string(&attempted).unwrap_or_default()
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::{QueueSettings, ThroughputLimit};

    fn fifo(content: bool) -> QueueSettings {
        QueueSettings {
            fifo: true,
            content_based_dedup: content,
            visibility_timeout_s: 30,
            ..Default::default()
        }
    }

    use crate::backlog::testing::{backend_tests, Backend};

    fn m(group: &str, body: &str) -> NewMessage {
        NewMessage {
            body: body.into(),
            group_id: Some(group.into()),
            ..Default::default()
        }
    }

    fn bodies(got: &[Message]) -> Vec<&str> {
        got.iter().map(|m| m.body.as_str()).collect()
    }

    fn settings_follow_sqs_rules(b: &Backend) {
        let s = b.queues();
        fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
            r.unwrap_err().to_string()
        }
        assert!(err(s.put_queue("q", &fifo(false), 0)).contains("ends in .fifo"));
        assert!(err(s.put_queue("q.fifo", &QueueSettings::default(), 0)).contains(".fifo"));
        assert!(s.put_queue(".fifo", &fifo(false), 0).is_err());
        let q = s.put_queue("q.fifo", &fifo(true), 5).unwrap();
        assert!(q.settings.fifo && q.settings.content_based_dedup);
        assert_eq!(q.settings.dedup_scope, DedupScope::Queue);
        // Per-group throughput needs per-group deduplication.
        let per_group = QueueSettings {
            throughput_limit: ThroughputLimit::PerMessageGroupId,
            ..fifo(true)
        };
        assert!(err(s.put_queue("q.fifo", &per_group, 6)).contains("messageGroup"));
        let per_group = QueueSettings {
            dedup_scope: DedupScope::MessageGroup,
            ..per_group
        };
        assert_eq!(
            s.put_queue("q.fifo", &per_group, 6).unwrap().settings,
            per_group
        );
        // FIFO settings on a standard queue are refused.
        let standard = QueueSettings {
            content_based_dedup: true,
            ..Default::default()
        };
        assert!(s.put_queue("std", &standard, 0).is_err());
        // The dead-letter queue is of the same type.
        s.put_queue("std", &QueueSettings::default(), 0).unwrap();
        let to_std = QueueSettings {
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "std".into(),
                max_receive_count: 1,
            }),
            ..fifo(false)
        };
        assert!(err(s.put_queue("q.fifo", &to_std, 7)).contains("must be a FIFO queue"));
        // Standard messages carry no group.
        assert!(s.send("std", &[m("g", "x")], 0).is_err());
        // FIFO messages need one, and a deduplication id unless content-based.
        assert!(err(s.send(
            "q.fifo",
            &[NewMessage {
                body: "x".into(),
                ..Default::default()
            }],
            0
        ))
        .contains("message group id"));
        s.put_queue("plain.fifo", &fifo(false), 0).unwrap();
        assert!(err(s.send("plain.fifo", &[m("g", "x")], 0)).contains("deduplication id"));
    }

    fn order_per_group_with_one_group_in_flight_at_a_time(b: &Backend) {
        let s = b.queues();
        s.put_queue("q.fifo", &fifo(true), 0).unwrap();
        let sent = s
            .send(
                "q.fifo",
                &[
                    m("a", "a1"),
                    m("a", "a2"),
                    m("b", "b1"),
                    m("a", "a3"),
                    m("b", "b2"),
                ],
                0,
            )
            .unwrap();
        let seqs: Vec<u128> = sent
            .iter()
            .map(|x| x.sequence_number.as_deref().unwrap().parse().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(sent[0].sequence_number.as_deref().unwrap().len(), 20);
        // One at a time: a group in flight gives nothing more.
        let first = s.receive("q.fifo", 1, None, 10).unwrap();
        assert_eq!(bodies(&first), ["a1"]);
        assert_eq!(first[0].group_id.as_deref(), Some("a"));
        assert_eq!(first[0].sequence_number, sent[0].sequence_number);
        let second = s.receive("q.fifo", 1, None, 10).unwrap();
        assert_eq!(bodies(&second), ["b1"]);
        assert!(s.receive("q.fifo", 10, None, 10).unwrap().is_empty());
        // Deleting the head unblocks its group.
        s.delete_message("q.fifo", first[0].receipt.as_deref().unwrap())
            .unwrap();
        assert_eq!(
            bodies(&s.receive("q.fifo", 10, None, 20).unwrap()),
            ["a2", "a3"]
        );
        // b1's visibility timeout ends: it comes again, before b2.
        let again = s.receive("q.fifo", 10, None, 10 + 30_000).unwrap();
        assert_eq!(bodies(&again), ["b1", "b2"]);
        assert_eq!(again[0].receive_count, 2);
        // A receive takes as many of a group's messages as it can, in order.
        let b2 = b.fresh();
        let s2 = b2.queues();
        s2.put_queue("q.fifo", &fifo(true), 0).unwrap();
        s2.send("q.fifo", &[m("x", "x1"), m("y", "y1"), m("x", "x2")], 0)
            .unwrap();
        assert_eq!(
            bodies(&s2.receive("q.fifo", 10, None, 0).unwrap()),
            ["x1", "x2", "y1"]
        );
    }

    fn deduplication_by_id_content_and_scope_for_five_minutes(b: &Backend) {
        let s = b.queues();
        s.put_queue("q.fifo", &fifo(true), 0).unwrap();
        let one = s.send("q.fifo", &[m("g", "same")], 1_000).unwrap();
        // The same body (content-based) within 5 minutes: the original id and number.
        let dup = s
            .send("q.fifo", &[m("g2", "same")], 1_000 + DEDUP_INTERVAL_MS - 1)
            .unwrap();
        assert_eq!(dup[0].id, one[0].id);
        assert_eq!(dup[0].sequence_number, one[0].sequence_number);
        assert_eq!(s.stats("q.fifo", 2_000).unwrap().visible, 1);
        // Received and deleted: still remembered.
        let got = s.receive("q.fifo", 10, None, 2_000).unwrap();
        s.delete_message("q.fifo", got[0].receipt.as_deref().unwrap())
            .unwrap();
        let dup = s.send("q.fifo", &[m("g", "same")], 3_000).unwrap();
        assert_eq!(dup[0].id, one[0].id);
        assert!(s.receive("q.fifo", 10, None, 3_000).unwrap().is_empty());
        // Exactly 5 minutes later it is a new message.
        let later = s
            .send("q.fifo", &[m("g", "same")], 1_000 + DEDUP_INTERVAL_MS)
            .unwrap();
        assert_ne!(later[0].id, one[0].id);
        // An explicit id beats the content; duplicates inside one batch too.
        let with_id = |body: &str, id: &str| NewMessage {
            dedup_id: Some(id.into()),
            ..m("g", body)
        };
        let b = s
            .send(
                "q.fifo",
                &[
                    with_id("p", "k1"),
                    with_id("q", "k1"),
                    with_id("same", "k2"),
                ],
                400_000,
            )
            .unwrap();
        assert_eq!(b[1].id, b[0].id);
        assert_ne!(b[2].id, later[0].id, "k2 is not the content hash");
        // Scope messageGroup: the same id in two groups is two messages.
        let scoped = QueueSettings {
            dedup_scope: DedupScope::MessageGroup,
            ..fifo(false)
        };
        s.put_queue("g.fifo", &scoped, 0).unwrap();
        let x = s
            .send(
                "g.fifo",
                &[
                    NewMessage {
                        dedup_id: Some("d".into()),
                        ..m("a", "1")
                    },
                    NewMessage {
                        dedup_id: Some("d".into()),
                        ..m("b", "2")
                    },
                    NewMessage {
                        dedup_id: Some("d".into()),
                        ..m("a", "3")
                    },
                ],
                0,
            )
            .unwrap();
        assert_ne!(x[0].id, x[1].id);
        assert_eq!(x[2].id, x[0].id);
        assert_eq!(x[0].dedup_id.as_deref(), Some("d"));
        assert_eq!(s.stats("g.fifo", 0).unwrap().visible, 2);
        // Content-based ids are the body's SHA-256.
        let got = s.receive("q.fifo", 10, None, 400_000).unwrap();
        assert_eq!(
            got[0].dedup_id.as_deref(),
            Some(hex::encode(Sha256::digest(b"same")).as_str())
        );
    }

    fn receive_attempts_return_the_same_messages_until_they_change(b: &Backend) {
        let s = b.queues();
        s.put_queue("q.fifo", &fifo(true), 0).unwrap();
        s.send("q.fifo", &[m("a", "a1"), m("b", "b1"), m("b", "b2")], 0)
            .unwrap();
        let got = s.receive_attempt("q.fifo", 2, None, Some("t1"), 0).unwrap();
        assert_eq!(bodies(&got), ["a1", "b1"]);
        // The same attempt (a lost answer retried): the same messages and handles, with
        // the visibility timeout started again.
        let again = s
            .receive_attempt("q.fifo", 2, None, Some("t1"), 10_000)
            .unwrap();
        assert_eq!(bodies(&again), ["a1", "b1"]);
        assert_eq!(again[0].receipt, got[0].receipt);
        assert_eq!(again[0].receive_count, 1);
        assert_eq!(again[0].visible_at_ms, 40_000);
        assert!(s.receive("q.fifo", 10, None, 35_000).unwrap().is_empty());
        // Another attempt id receives anew (nothing: both groups are in flight).
        assert!(s
            .receive_attempt("q.fifo", 2, None, Some("t2"), 10_000)
            .unwrap()
            .is_empty());
        // Once one of them is deleted, the attempt receives anew.
        s.delete_message("q.fifo", got[0].receipt.as_deref().unwrap())
            .unwrap();
        s.change_visibility("q.fifo", got[1].receipt.as_deref().unwrap(), 0, 20_000)
            .unwrap();
        let fresh = s
            .receive_attempt("q.fifo", 2, None, Some("t1"), 20_000)
            .unwrap();
        assert_eq!(bodies(&fresh), ["b1", "b2"]);
        assert_ne!(fresh[0].receipt, got[1].receipt);
        // After 5 minutes the id is forgotten.
        let late = 20_000 + DEDUP_INTERVAL_MS;
        let after = s
            .receive_attempt("q.fifo", 2, None, Some("t1"), late)
            .unwrap();
        assert_eq!(bodies(&after), ["b1", "b2"]);
        assert_ne!(after[0].receipt, fresh[0].receipt);
    }

    fn dead_letters_keep_group_order_and_the_group_goes_on(b: &Backend) {
        let s = b.queues();
        s.put_queue("dlq.fifo", &fifo(true), 0).unwrap();
        let settings = QueueSettings {
            visibility_timeout_s: 0,
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "dlq.fifo".into(),
                max_receive_count: 1,
            }),
            ..fifo(true)
        };
        s.put_queue("q.fifo", &settings, 0).unwrap();
        s.send(
            "q.fifo",
            &[m("g", "poison"), m("g", "next"), m("h", "other")],
            0,
        )
        .unwrap();
        let got = s.receive("q.fifo", 1, None, 10).unwrap();
        assert_eq!(bodies(&got), ["poison"]);
        // Received once: the head goes to the DLQ and its group proceeds.
        let got = s.receive("q.fifo", 1, None, 20).unwrap();
        assert_eq!(bodies(&got), ["next"]);
        let dead = s.receive("dlq.fifo", 10, Some(0), 30).unwrap();
        assert_eq!(bodies(&dead), ["poison"]);
        assert_eq!(dead[0].group_id.as_deref(), Some("g"));
        // Moved back, it keeps its group and sequence number.
        let r = s.redrive("dlq.fifo", None, None, 40).unwrap();
        assert_eq!((r.destination.as_str(), r.moved), ("q.fifo", 1));
        let back = s.receive("q.fifo", 10, Some(60), 50).unwrap();
        assert_eq!(back[0].body, "poison");
        assert_eq!(back[0].sequence_number, dead[0].sequence_number);
        // A standard queue is not a destination for FIFO messages.
        s.put_queue("std", &QueueSettings::default(), 0).unwrap();
        assert!(s.redrive("dlq.fifo", Some("std"), None, 60).is_err());
    }

    fn many_groups_receive_in_group_order_without_scanning_every_message(b: &Backend) {
        let s = b.queues();
        s.put_queue("q.fifo", &fifo(true), 0).unwrap();
        // 500 busy groups of 20 messages ahead of one free group.
        for g in 0..500 {
            let batch: Vec<NewMessage> = (0..10)
                .map(|i| m(&format!("g{g}"), &format!("{g}-{i}")))
                .collect();
            s.send("q.fifo", &batch, 0).unwrap();
            let batch: Vec<NewMessage> = (10..20)
                .map(|i| m(&format!("g{g}"), &format!("{g}-{i}")))
                .collect();
            s.send("q.fifo", &batch, 0).unwrap();
        }
        for _ in 0..500 {
            assert_eq!(s.receive("q.fifo", 1, Some(600), 0).unwrap().len(), 1);
        }
        s.send("q.fifo", &[m("free", "f1")], 0).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..20 {
            assert!(s.receive("q.fifo", 1, Some(600), 1).unwrap().len() <= 1);
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }

    backend_tests!(
        settings_follow_sqs_rules,
        order_per_group_with_one_group_in_flight_at_a_time,
        deduplication_by_id_content_and_scope_for_five_minutes,
        receive_attempts_return_the_same_messages_until_they_change,
        dead_letters_keep_group_order_and_the_group_goes_on,
        many_groups_receive_in_group_order_without_scanning_every_message,
    );
}
