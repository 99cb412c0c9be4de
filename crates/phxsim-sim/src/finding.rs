//! What the checkers report: a finding and its kind. A module of its own so that the event
//! stream (which prints findings), the planted-bug registry and the checkers depend on it and
//! not on each other.

use serde::Serialize;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Nodes did not agree with the live presences within the bound after the last step.
    NoConvergence,
    /// A joined client's list differs from its node's list at the end.
    ClientView,
    /// A presence whose owner is gone is still listed after the bound.
    Ghost,
    /// A live presence is missing after convergence should have happened.
    Lost,
    /// A presence is listed with an older meta (phx_ref) than its owner holds.
    StaleMeta,
    /// A client's messages do not replay to what it shows, or are malformed.
    DiffStream,
    /// A leave of a ref the client does not hold (reference anomaly 1).
    DuplicateLeave,
    /// A join of a ref the client already holds (reference anomaly 2).
    DuplicateJoin,
    /// An `[[expect.visible]]` did not hold.
    Expectation,
}

impl FindingKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [FindingKind; 9] = [
        FindingKind::NoConvergence,
        FindingKind::ClientView,
        FindingKind::Ghost,
        FindingKind::Lost,
        FindingKind::StaleMeta,
        FindingKind::DiffStream,
        FindingKind::DuplicateLeave,
        FindingKind::DuplicateJoin,
        FindingKind::Expectation,
    ];

    /// The kind named `name` (as [`FindingKind::name`] spells it).
    pub fn from_name(name: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            FindingKind::NoConvergence => "no_convergence",
            FindingKind::ClientView => "client_view",
            FindingKind::Ghost => "ghost",
            FindingKind::Lost => "lost",
            FindingKind::StaleMeta => "stale_meta",
            FindingKind::DiffStream => "diff_stream",
            FindingKind::DuplicateLeave => "duplicate_leave",
            FindingKind::DuplicateJoin => "duplicate_join",
            FindingKind::Expectation => "expectation",
        }
    }

    /// Anomalies are what the reference itself does; everything else is a violation.
    pub fn is_anomaly(self) -> bool {
        matches!(
            self,
            FindingKind::DuplicateLeave | FindingKind::DuplicateJoin
        )
    }

    /// No convergence is its own failure class (distinct exit code).
    pub fn is_liveness(self) -> bool {
        matches!(self, FindingKind::NoConvergence)
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub at_ms: u64,
    pub kind: FindingKind,
    /// The node or client it is about.
    pub subject: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} ms] {} at {}: {}",
            self.at_ms, self.kind, self.subject, self.detail
        )
    }
}
