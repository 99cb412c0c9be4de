//! The crosscheck report as a table for people (JSON comes from `serde`).

use crate::Report;
use crate::compare::EventVerdict;
use std::fmt::Write;

fn range(lo: Option<u64>, hi: Option<u64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}..{hi}"),
        _ => "-".into(),
    }
}

fn verdict_word(v: EventVerdict) -> &'static str {
    match v {
        EventVerdict::Inside => "inside",
        EventVerdict::WithinTolerance => "within tolerance",
        EventVerdict::Outside => "OUTSIDE",
        EventVerdict::MissingInSim => "MISSING IN SIM",
        EventVerdict::MissingInReal => "MISSING IN REAL",
        EventVerdict::SomeSeedsOnly => "some seeds only",
        EventVerdict::AtTheEnd => "at the end",
    }
}

/// The table: one line per event identity, then the final lists and the verdict.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let n = r.seeds.len();
    let _ = writeln!(out, "crosscheck {} — {}", r.scenario, r.title);
    let _ = writeln!(
        out,
        "real cluster: nodes {} on 127.0.0.1, OTP {}, Elixir {}, phoenix_pubsub from {}{}",
        r.real.nodes.join(","),
        r.real.otp,
        r.real.elixir,
        r.real.pubsub_ebin,
        if r.real.one_way_filter {
            " (one-way cuts: PubSub messages dropped at the sender)"
        } else {
            ""
        }
    );
    if let Some(bug) = &r.planted_bug {
        let _ = writeln!(out, "simulator with a planted bug: {bug}");
    }
    let _ = writeln!(
        out,
        "simulator: {n} seeds ({})",
        r.seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    for t in &r.tolerances {
        let _ = writeln!(out, "tolerance {}: {} ms — {}", t.name, t.ms, t.why);
    }
    for j in &r.rejoins {
        let _ = writeln!(
            out,
            "rejoin of {} on {} after {} at {} ms: {} (where the seeds saw it, median)",
            j.client,
            j.node,
            j.cause,
            j.after_ms,
            j.placed_at_ms
                .map(|t| format!("{t} ms"))
                .unwrap_or_else(|| "no seed showed it; left out".into())
        );
    }
    let _ = writeln!(
        out,
        "\n{:<6} {:<16} {:<40} {:>2} {:>8} {:>13} {:>5}  verdict",
        "node", "event", "subject", "n", "real ms", "seeds ms", "seeds"
    );
    for e in &r.comparison.events {
        let mut subject = e.id.subject.clone();
        if let Some(m) = &e.id.meta
            && m != "{}"
        {
            subject = format!("{subject} {m}");
        }
        let verdict = if e.off_by_ms > 0 {
            format!("{} (off by {} ms)", verdict_word(e.verdict), e.off_by_ms)
        } else {
            verdict_word(e.verdict).to_string()
        };
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<40} {:>2} {:>8} {:>13} {:>5}  {}",
            e.id.node,
            e.id.kind.name(),
            subject,
            e.id.n,
            e.real_ms
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            range(e.seed_min_ms, e.seed_max_ms),
            format!("{}/{n}", e.seeds_with),
            verdict
        );
    }
    let _ = writeln!(out, "\nfinal lists");
    for l in &r.comparison.lists {
        let what = match &l.real {
            Some(list) => format!("{} presences", list.len()),
            None => "down".into(),
        };
        let _ = writeln!(
            out,
            "{:<6} {:<14} equal to {}/{} seeds{}",
            l.node,
            what,
            l.seeds_equal,
            l.seeds,
            if l.agrees { "" } else { "  DIFFERENT" }
        );
    }
    if r.real.starved {
        let _ = writeln!(
            out,
            "warning: the real nodes were starved (a timer woke {} ms late, a command ran {} ms late, \
             the trackers started {} ms apart): the machine is too loaded for real timings to mean anything",
            r.real.max_lag_ms, r.real.max_send_lag_ms, r.real.start_skew_ms
        );
    }
    for (seed, v) in &r.seed_verdicts {
        let _ = writeln!(
            out,
            "note: seed {seed} did not pass the scenario's own expectations ({v:?}); compared all the same"
        );
    }
    let bad = r
        .comparison
        .events
        .iter()
        .filter(|e| !e.verdict.agrees())
        .count();
    let _ = writeln!(
        out,
        "\n{}: {} events, {} disagree; {} of {} final lists equal",
        if r.agrees { "AGREE" } else { "DISAGREE" },
        r.comparison.events.len(),
        bad,
        r.comparison.lists.iter().filter(|l| l.agrees).count(),
        r.comparison.lists.len()
    );
    out
}
