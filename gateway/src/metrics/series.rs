//! A call's label values resolved to their series once, not on every call.
//!
//! Recording a call used to bound each label (a set lookup per label), build the
//! family's label struct from owned `String`s, and hash it with SipHash to find the
//! series: a fifth of a proxied call's instructions with tracing off. The result is
//! the same every time for the same values, because a bound never forgets a value it
//! took and never takes one once it is full; so [`SeriesCache`] keeps it, keyed by
//! the values as they came (cut to the label length), and a later call with the same
//! values finds its series with one hash (foldhash) of one string.
//!
//! The cache holds at most [`MAX_CACHED`] keys. Past that, calls with new values take
//! the slow path every time and are counted exactly as before: clients that send a
//! new model name on every call cannot grow it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// Keys one cache holds; each is at most a few label values of
/// [`super::MAX_LABEL_LEN`] bytes.
pub const MAX_CACHED: usize = 1024;

/// Separates label values in a key (a value cannot hold it: label values are
/// cut text, and `\0` in one would still only make a different key).
const SEPARATOR: char = '\0';

/// Series handles `V` by the label values they were resolved from.
#[derive(Debug)]
pub struct SeriesCache<V> {
    map: RwLock<HashMap<Box<str>, V, foldhash::fast::RandomState>>,
}

impl<V> Default for SeriesCache<V> {
    fn default() -> Self {
        SeriesCache {
            map: RwLock::new(HashMap::default()),
        }
    }
}

thread_local! {
    /// The key being looked up, reused so a lookup allocates nothing.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<V: Clone> SeriesCache<V> {
    /// The handles for `values`, made by `resolve` the first time (and every time
    /// once the cache is full).
    pub fn get(&self, values: &[&str], resolve: impl FnOnce() -> V) -> V {
        KEY.with(|key| match key.try_borrow_mut() {
            Ok(mut key) => {
                fill(&mut key, values);
                self.get_keyed(&key, resolve)
            }
            // Only reachable if `resolve` itself recorded a metric.
            Err(_) => resolve(),
        })
    }

    fn get_keyed(&self, key: &str, resolve: impl FnOnce() -> V) -> V {
        let found = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if let Some(handles) = found {
            return handles;
        }
        let handles = resolve();
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() < MAX_CACHED {
            map.entry(key.into()).or_insert_with(|| handles.clone());
        }
        handles
    }

    /// Keys held (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn fill(key: &mut String, values: &[&str]) {
    key.clear();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            key.push(SEPARATOR);
        }
        key.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn resolves_a_key_once_and_tells_keys_apart() {
        let cache = SeriesCache::<u32>::default();
        let calls = Cell::new(0);
        let resolve = |v| {
            calls.set(calls.get() + 1);
            v
        };
        assert_eq!(cache.get(&["a", "b"], || resolve(1)), 1);
        assert_eq!(cache.get(&["a", "b"], || resolve(9)), 1);
        // The separator keeps ("a", "b") and ("ab", "") apart.
        assert_eq!(cache.get(&["ab", ""], || resolve(2)), 2);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_full_cache_resolves_new_keys_every_time_and_keeps_old_ones() {
        let cache = SeriesCache::<usize>::default();
        for i in 0..MAX_CACHED + 10 {
            assert_eq!(cache.get(&[&i.to_string()], || i), i);
        }
        assert_eq!(cache.held(), MAX_CACHED);
        let new = (MAX_CACHED + 5).to_string();
        assert_eq!(cache.get(&[&new], || 7), 7);
        assert_eq!(cache.get(&[&new], || 8), 8, "not cached once full");
        assert_eq!(cache.get(&["3"], || 0), 3, "cached before it filled");
    }
}
