//! The answers of `POST /v1/responses` the upstream remembers, by id, so `GET`,
//! `DELETE` and `/input_items` on `/v1/responses/{id}` can answer as OpenAI does. A
//! request with `"store": false` (what Codex sends) is not remembered. The store
//! keeps the newest [`MAX_STORED`] answers, so an upstream under load stays small.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

/// Most answers remembered; the oldest are forgotten first.
const MAX_STORED: usize = 1024;

/// One remembered answer.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    /// The whole `response` object, as the answer's last event carried it.
    pub(crate) response: Value,
    /// The request's input, as items with ids.
    pub(crate) input_items: Vec<Value>,
}

/// The remembered answers.
#[derive(Debug, Default)]
pub(crate) struct ResponseStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Stored>,
    /// Ids, oldest first.
    order: VecDeque<String>,
}

impl ResponseStore {
    pub(crate) fn put(&self, id: String, stored: Stored) {
        let mut inner = self.lock();
        if inner.by_id.insert(id.clone(), stored).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > MAX_STORED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_id.remove(&oldest);
            }
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Stored> {
        self.lock().by_id.get(id).cloned()
    }

    /// Forgets `id`; `false` when it was not remembered.
    pub(crate) fn delete(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let found = inner.by_id.remove(id).is_some();
        if found {
            inner.order.retain(|kept| kept != id);
        }
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_answers_are_forgotten_first() {
        let store = ResponseStore::default();
        for i in 0..=MAX_STORED {
            let stored = Stored {
                response: Value::from(i),
                input_items: Vec::new(),
            };
            store.put(format!("resp_{i}"), stored);
        }
        assert!(store.get("resp_0").is_none());
        assert!(store.get("resp_1").is_some());
        assert!(store.delete("resp_1"));
        assert!(!store.delete("resp_1"));
    }
}
