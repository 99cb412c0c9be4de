//! The run's one event stream. Hosts emit each [`Event`] once, as it happens; the driver
//! drains the stream after every simulated step, prints the printed kinds as JSON lines with
//! simulated time (the snapshot material, and what `--transcript FILE` writes) and hands the
//! kinds the checkers read to them, in the order they were emitted.

use crate::event::{Event, Line};

/// Events emitted since the last drain, and the transcript printed so far.
#[derive(Debug, Clone)]
pub(crate) struct EventStream {
    pending: Vec<Line>,
    printed: Vec<String>,
    /// Off for runs nobody will read (the explorer, benchmarks): only what the checkers read
    /// is kept, and nothing is printed.
    printing: bool,
}

impl Default for EventStream {
    fn default() -> Self {
        Self::new(true)
    }
}

impl EventStream {
    /// A stream that prints a transcript when `printing`.
    pub fn new(printing: bool) -> Self {
        Self {
            pending: Vec::new(),
            printed: Vec::new(),
            printing,
        }
    }

    /// Emits an event at `t_ms`; without a transcript, one the checkers do not read is
    /// dropped at once.
    pub fn push(&mut self, t_ms: u64, event: Event) {
        if self.printing || event.feeds_checkers() {
            self.pending.push(Line { t: t_ms, event });
        }
    }

    /// [`EventStream::push`] of a printed-only event built only if it is printed: frames are
    /// not rendered for runs nobody reads.
    pub fn push_with(&mut self, t_ms: u64, event: impl FnOnce() -> Event) {
        if self.printing {
            self.push(t_ms, event());
        }
    }

    /// Whether a transcript is printed (see [`EventStream::new`]).
    pub fn is_printing(&self) -> bool {
        self.printing
    }

    /// Takes the events emitted since the last drain: prints the printed kinds, and returns
    /// the ones the checkers read, in order.
    pub fn drain(&mut self) -> Vec<Line> {
        let mut out = Vec::new();
        for line in std::mem::take(&mut self.pending) {
            if self.printing && line.event.is_printed() {
                self.printed.push(line.to_json());
            }
            if line.event.feeds_checkers() {
                out.push(line);
            }
        }
        out
    }

    /// Takes the transcript printed so far, one JSON line per event.
    pub fn take_printed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.printed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(action: &str) -> Event {
        Event::Step {
            action: action.into(),
        }
    }

    #[test]
    fn the_checkers_get_their_kinds_and_the_transcript_the_printed_ones_in_order() {
        let mut s = EventStream::new(true);
        s.push(1, step("a"));
        s.push(
            2,
            Event::Presence {
                client: "c".into(),
                event: "presence_diff".into(),
                payload: serde_json::json!({}),
            },
        );
        s.push(3, Event::Connected { client: "c".into() });
        let kinds: Vec<&str> = s.drain().iter().map(|l| l.event.name()).collect();
        assert_eq!(kinds, ["step", "presence"]);
        assert_eq!(
            s.take_printed(),
            [
                r#"{"t":1,"ev":"step","action":"a"}"#,
                r#"{"t":3,"ev":"connected","client":"c"}"#
            ]
        );
        assert!(s.drain().is_empty());
    }

    #[test]
    fn without_a_transcript_only_what_the_checkers_read_is_kept() {
        let mut s = EventStream::new(false);
        s.push(1, step("a"));
        s.push(2, Event::Connected { client: "c".into() });
        s.push_with(3, || unreachable!("not built without a transcript"));
        assert_eq!(s.drain().len(), 1);
        assert!(s.take_printed().is_empty());
    }
}
