//! The run's event stream as JSON lines with simulated time: the checkers' evidence, the
//! snapshot material, and what `--transcript FILE` writes.

use serde_json::{Map, Value as Json};

/// Events in the order the simulation produced them.
#[derive(Default, Debug, Clone)]
pub struct Transcript {
    lines: Vec<String>,
}

impl Transcript {
    /// Appends an event (a JSON object) at `t_ms`; `t` becomes its first field.
    pub fn push(&mut self, t_ms: u64, event: Json) {
        let mut obj = Map::new();
        obj.insert("t".into(), Json::from(t_ms));
        if let Json::Object(fields) = event {
            for (k, v) in fields {
                obj.insert(k, v);
            }
        }
        self.lines.push(Json::Object(obj).to_string());
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.clone()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}
