//! ListObjects over the `(bucket, key)` primary key, exactly as the SQLite store pages:
//! keys are `BYTEA` (byte order), each page starts with an index seek at its lower bound,
//! common prefixes are skipped with one seek each, and the continuation token is the
//! page's inclusive lower bound, base64url — the same tokens on both backends.

use super::{object_from_row, Tx, OBJECT_COLUMNS};
use crate::model::{ListPage, ListQuery};
use crate::{ObjectError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The smallest byte string greater than every string starting with `prefix`; `None` when
/// there is none (empty or all `0xff`).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

fn encode_token(lower: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(lower)
}

fn decode_token(token: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(token).map_err(|_| {
        ObjectError::InvalidArgument("the continuation token provided is incorrect".into())
    })
}

/// Where the page starts (inclusive).
fn lower_bound(q: &ListQuery) -> Result<Vec<u8>> {
    let mut lower = match (&q.continuation, &q.start_after) {
        (Some(t), _) => decode_token(t)?,
        (None, Some(after)) => {
            let mut b = after.as_bytes().to_vec();
            // The successor of a key in byte order: keys never contain NUL.
            b.push(0);
            b
        }
        (None, None) => Vec::new(),
    };
    if lower.as_slice() < q.prefix.as_bytes() {
        lower = q.prefix.as_bytes().to_vec();
    }
    Ok(lower)
}

struct Rows<'c> {
    tx: &'c Tx<'c>,
    bucket: &'c str,
    upper: Option<Vec<u8>>,
}

impl Rows<'_> {
    /// Up to `limit` objects with keys in `[lower, upper)`, in key order.
    async fn from(&self, lower: &[u8], limit: usize) -> Result<Vec<crate::ObjectMeta>> {
        let limit = limit as i64;
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects_objects
                     WHERE bucket = $1 AND key >= $2 AND ($3::BYTEA IS NULL OR key < $3)
                     ORDER BY key LIMIT $4"
                ),
                &[&self.bucket, &lower, &self.upper, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| object_from_row(self.bucket, r))
            .collect()
    }
}

/// One page of `q`.
pub(super) async fn page(tx: &Tx<'_>, q: &ListQuery) -> Result<ListPage> {
    let mut page = ListPage::default();
    if q.max_keys == 0 {
        return Ok(page);
    }
    let rows = Rows {
        tx,
        bucket: &q.bucket,
        upper: successor(q.prefix.as_bytes()),
    };
    let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
    let mut lower = lower_bound(q)?;
    let mut count = 0;
    'fill: while count < q.max_keys {
        let batch = rows.from(&lower, q.max_keys - count).await?;
        if batch.is_empty() {
            return Ok(page);
        }
        for obj in batch {
            let rest = &obj.key[q.prefix.len()..];
            if let Some(at) = delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
                let common = obj.key[..q.prefix.len() + at].to_string();
                count += 1;
                page.last = Some(common.clone());
                let Some(next) = successor(common.as_bytes()) else {
                    page.common_prefixes.push(common);
                    return Ok(page);
                };
                page.common_prefixes.push(common);
                lower = next;
                // The rest of the batch may lie under the common prefix: seek past it.
                continue 'fill;
            }
            lower = obj.key.as_bytes().to_vec();
            lower.push(0);
            page.last = Some(obj.key.clone());
            page.objects.push(obj);
            count += 1;
        }
    }
    if !rows.from(&lower, 1).await?.is_empty() {
        page.next_continuation = Some(encode_token(&lower));
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_is_the_least_upper_bound_of_a_prefix() {
        assert_eq!(successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b""), None);
        assert_eq!(successor(b"\xff\xff"), None);
    }
}
