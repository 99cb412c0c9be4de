//! `no_convergence`: after the last scripted step, every node must list exactly the truth
//! within the convergence bound, and still do so at the end. A cluster that agrees only after
//! the bound, or never, fails.

use super::{Finding, FindingKind, finding};

#[derive(Default)]
pub(super) struct Convergence {
    /// First time every node agreed with the truth since the last step, if still so.
    agreed_since: Option<u64>,
    /// Whether every node agreed with the truth at the last observation.
    last_agree: bool,
}

impl Convergence {
    /// A scripted step: agreement must be reached again.
    pub(super) fn step(&mut self) {
        self.agreed_since = None;
    }

    pub(super) fn last_agree(&self) -> bool {
        self.last_agree
    }

    /// Whether every node agreed with the truth at `at_ms`.
    pub(super) fn observe(&mut self, agree: bool, at_ms: u64) {
        self.last_agree = agree;
        match (agree, self.agreed_since) {
            (true, None) => self.agreed_since = Some(at_ms),
            (false, Some(_)) => self.agreed_since = None,
            _ => {}
        }
    }

    /// Judges the run that ended at `end`; returns when it converged.
    pub(super) fn finish(
        &self,
        end: u64,
        last_step_ms: u64,
        bound_ms: u64,
        out: &mut Vec<Finding>,
    ) -> Option<u64> {
        let converged_at = self.agreed_since;
        let deadline = last_step_ms + bound_ms;
        let detail = match converged_at {
            Some(t) if t <= deadline => None,
            Some(t) => Some(format!(
                "converged at {t} ms, {} ms after the last step (bound {bound_ms} ms)",
                t - last_step_ms
            )),
            None if end >= deadline => Some(format!(
                "not converged {} ms after the last step (bound {bound_ms} ms)",
                end - last_step_ms
            )),
            None => Some(format!(
                "the run ended {} ms after the last step, before the bound of {bound_ms} ms; not converged",
                end - last_step_ms
            )),
        };
        if let Some(detail) = detail {
            out.push(finding(end, FindingKind::NoConvergence, "cluster", detail));
        }
        converged_at
    }
}
