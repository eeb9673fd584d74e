//! A node's identity: `--node-id`, else the id kept in `DATA_DIR/node-id` (made on the
//! first start). It stays the same across restarts, so a restarted node recognises the
//! claims its previous run left behind, and two live nodes with one id are refused
//! ([`crate::Membership::join`]).

use crate::{ClusterError, Result};
use std::fmt;
use std::io::Write;
use std::path::Path;

/// File in the data directory holding the node's id.
pub const NODE_ID_FILE: &str = "node-id";

/// A node id: 1–64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// Checks `id`'s form.
    pub fn parse(id: &str) -> Result<NodeId> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(NodeId(id.to_string()))
        } else {
            Err(ClusterError::BadNodeId(id.to_string()))
        }
    }

    /// `explicit` (`--node-id`) when given; else the id in `DATA_DIR/node-id`, made on the
    /// first start as `node-` and 8 random hex digits.
    pub fn resolve(data_dir: &Path, explicit: Option<&str>) -> Result<NodeId> {
        if let Some(id) = explicit {
            return NodeId::parse(id);
        }
        let file = data_dir.join(NODE_ID_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                return NodeId::parse(text.trim()).map_err(|_| {
                    ClusterError::Io(format!(
                        "{} does not hold a valid node id: fix or remove it",
                        file.display()
                    ))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ClusterError::Io(format!(
                    "cannot read {}: {e}",
                    file.display()
                )))
            }
        }
        let id = NodeId(format!("node-{:08x}", rand::random::<u32>()));
        let tmp = data_dir.join(format!(".{NODE_ID_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", id.0)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &file)
        };
        write().map_err(|e| ClusterError::Io(format!("cannot write {}: {e}", file.display())))?;
        Ok(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeId::resolve(dir.path(), None).unwrap();
        assert!(a.as_str().starts_with("node-"), "{a}");
        assert_eq!(NodeId::resolve(dir.path(), None).unwrap(), a);
        // The flag wins and is not written.
        let b = NodeId::resolve(dir.path(), Some("edge-1")).unwrap();
        assert_eq!(b.as_str(), "edge-1");
        assert_eq!(NodeId::resolve(dir.path(), None).unwrap(), a);
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in ["", "a b", "x/y", &"n".repeat(65), "é"] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_ID_FILE), "not valid!\n").unwrap();
        let e = NodeId::resolve(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("node-id"), "{e}");
    }
}
