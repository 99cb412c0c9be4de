//! The run's event stream as JSON lines with simulated time: the checkers' evidence, the
//! snapshot material, and what `--transcript FILE` writes.

use serde_json::{Map, Value as Json};

/// Events in the order the simulation produced them.
#[derive(Default, Debug, Clone)]
pub struct Transcript {
    lines: Vec<String>,
    /// Off for runs nobody will read (the explorer, benchmarks): nothing is kept.
    off: bool,
}

impl Transcript {
    /// A transcript that keeps nothing.
    pub fn disabled() -> Self {
        Self {
            lines: Vec::new(),
            off: true,
        }
    }

    /// Appends an event (a JSON object) at `t_ms`; `t` becomes its first field.
    pub fn push(&mut self, t_ms: u64, event: Json) {
        if self.off {
            return;
        }
        let mut obj = Map::new();
        obj.insert("t".into(), Json::from(t_ms));
        if let Json::Object(fields) = event {
            for (k, v) in fields {
                obj.insert(k, v);
            }
        }
        self.lines.push(Json::Object(obj).to_string());
    }

    /// [`Transcript::push`] of an event built only if it is kept: frames are not rendered for
    /// runs nobody reads.
    pub fn push_with(&mut self, t_ms: u64, event: impl FnOnce() -> Json) {
        if !self.off {
            self.push(t_ms, event());
        }
    }

    /// Whether events are dropped (see [`Transcript::disabled`]).
    pub fn is_off(&self) -> bool {
        self.off
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.clone()
    }
}
