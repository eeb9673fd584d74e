//! [`SnapshotMap`]: a read-mostly map whose readers take no lock.
//!
//! The invoke path looks up per-function state (pools, reservations, resolved versions) on
//! every request, while the maps change only when a function is deployed, changed or first
//! invoked. Readers load an immutable snapshot (`arc-swap`: no lock, no contended counter);
//! writers take a mutex among themselves, copy the map, change the copy and publish it. A
//! write costs O(entries), which is fine at thousands of functions and rare writes.

use arc_swap::ArcSwap;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A map read without locks and written by copying (see the module docs).
pub struct SnapshotMap<K, V> {
    current: ArcSwap<HashMap<K, V>>,
    /// Serialises writers, so no write is lost and none copies the map twice.
    writer: Mutex<()>,
}

impl<K, V> Default for SnapshotMap<K, V> {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SnapshotMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key` now (a clone: use `Arc` values).
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.current.load().get(key).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.current.load().is_empty()
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    /// The whole map as it is now; later writes do not change it.
    pub fn snapshot(&self) -> Arc<HashMap<K, V>> {
        self.current.load_full()
    }

    /// The value of `key`, inserting `make()` first when there is none.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.current.load().get(&key) {
            return v.clone();
        }
        self.update(|m| m.entry(key).or_insert_with(make).clone())
    }

    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.update(|m| m.insert(key, value))
    }

    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if !self.current.load().contains_key(key) {
            return None;
        }
        self.update(|m| m.remove(key))
    }

    /// Keeps the entries `keep` accepts; returns the removed ones.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) -> Vec<(K, V)> {
        self.update(|m| m.extract_if(|k, v| !keep(k, v)).collect())
    }

    /// Empties the map; returns what it held.
    pub fn drain(&self) -> Vec<(K, V)> {
        self.update(|m| std::mem::take(m).into_iter().collect())
    }

    /// Runs `change` on a copy of the map and publishes the copy, with every other writer
    /// waiting; readers see the old map or the new one, never a mix.
    pub fn update<R>(&self, change: impl FnOnce(&mut HashMap<K, V>) -> R) -> R {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::clone(&self.current.load());
        let out = change(&mut next);
        self.current.store(Arc::new(next));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_whole_writes() {
        let m: SnapshotMap<String, u32> = SnapshotMap::new();
        assert!(m.is_empty());
        assert_eq!(m.get_or_insert_with("a".into(), || 1), 1);
        assert_eq!(
            m.get_or_insert_with("a".into(), || 2),
            1,
            "kept, not replaced"
        );
        let before = m.snapshot();
        m.insert("b".into(), 2);
        assert_eq!(before.len(), 1, "a snapshot does not change");
        assert_eq!(m.get("b"), Some(2));
        let gone = m.retain(|k, _| k == "b");
        assert_eq!(gone, vec![("a".to_string(), 1)]);
        assert_eq!(m.remove("b"), Some(2));
        assert_eq!(m.remove("b"), None);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let m = Arc::new(SnapshotMap::<u32, u32>::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        m.insert(t * 1000 + i, i);
                        assert_eq!(m.get(&(t * 1000 + i)), Some(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.drain().len(), 1000);
        assert!(m.is_empty());
    }
}
