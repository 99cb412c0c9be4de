//! A socket's joined channels by topic: a sorted vector, not a `BTreeMap`.
//!
//! Why: a socket nearly always has one channel, and a `BTreeMap`'s first node holds room for
//! eleven entries (about 1.8 KB for a socket's channels); a simulated node holds one socket
//! per browser. The vector holds what is joined, in the same (topic) order, so every walk
//! over the channels goes as before.

/// Values by topic, in topic order.
pub(super) struct TopicMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for TopicMap<V> {
    fn default() -> Self {
        TopicMap {
            entries: Vec::new(),
        }
    }
}

impl<V> TopicMap<V> {
    fn find(&self, topic: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(t, _)| t.as_str().cmp(topic))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let i = self.find(topic).ok()?;
        self.entries.get(i).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, topic: &str) -> Option<&mut V> {
        let i = self.find(topic).ok()?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    /// Adds or replaces; returns the value replaced.
    pub fn insert(&mut self, topic: String, value: V) -> Option<V> {
        match self.find(&topic) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                // one entry at a time: most sockets join one channel, and a vector's first
                // growth makes room for four (about 430 bytes a socket for nothing)
                self.entries.reserve_exact(1);
                self.entries.insert(i, (topic, value));
                None
            }
        }
    }

    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let i = self.find(topic).ok()?;
        let (_, v) = self.entries.remove(i);
        // A socket that left every channel holds no room for one.
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(v)
    }

    /// The `i`th entry in topic order.
    pub fn nth_mut(&mut self, i: usize) -> Option<(&str, &mut V)> {
        self.entries.get_mut(i).map(|(t, v)| (t.as_str(), v))
    }

    /// The values in topic order.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.entries.into_iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The same answers as a `BTreeMap` over a sequence of inserts and removes.
    #[test]
    fn it_answers_as_a_btree_map() {
        let mut map = TopicMap::default();
        let mut model = BTreeMap::new();
        let topics = [
            "room:b", "room:a", "room:c", "room:a", "x", "room:b", "", "room:c",
        ];
        for (n, t) in topics.iter().enumerate() {
            if n % 3 == 2 {
                assert_eq!(map.remove(t), model.remove(*t));
            } else {
                assert_eq!(
                    map.insert((*t).to_owned(), n),
                    model.insert((*t).to_owned(), n)
                );
            }
            assert_eq!(map.len(), model.len());
            for t in topics {
                assert_eq!(map.get(t), model.get(t));
            }
            let order: Vec<(String, usize)> = (0..map.len())
                .filter_map(|i| map.nth_mut(i).map(|(t, v)| (t.to_owned(), *v)))
                .collect();
            let want: Vec<(String, usize)> = model.iter().map(|(t, v)| (t.clone(), *v)).collect();
            assert_eq!(order, want);
        }
        map.insert("room:a".into(), 0);
        model.insert("room:a".into(), 0);
        if let Some(v) = map.get_mut("room:a") {
            *v = 99;
        }
        model.insert("room:a".into(), 99);
        assert_eq!(
            map.into_values().collect::<Vec<_>>(),
            model.into_values().collect::<Vec<_>>()
        );
    }
}
