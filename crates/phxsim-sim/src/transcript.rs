//! The run's event stream as JSON lines with simulated time: the checkers' evidence, the
//! snapshot material, and what `--transcript FILE` writes.

use crate::event::{Event, Line};

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

    /// Appends an event at `t_ms`.
    pub fn push(&mut self, t_ms: u64, event: Event) {
        if self.off {
            return;
        }
        self.lines.push(Line { t: t_ms, event }.to_json());
    }

    /// [`Transcript::push`] of an event built only if it is kept: frames are not rendered for
    /// runs nobody reads.
    pub fn push_with(&mut self, t_ms: u64, event: impl FnOnce() -> Event) {
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
