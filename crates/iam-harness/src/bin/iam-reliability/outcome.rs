//! What a scenario found (its figures and checks), and the report of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::Pace;
use crate::traffic::Sample;

/// One pass/fail check of a scenario.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) what: String,
    pub(crate) ok: bool,
    /// What was measured, for the report (empty when there is nothing to add).
    pub(crate) detail: String,
}

/// A scenario's figures and checks.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) name: &'static str,
    /// What was injected.
    pub(crate) injected: String,
    /// Requests sent (answered or not).
    pub(crate) requests: u64,
    /// Answers by status; `io` for exchanges that got no answer.
    pub(crate) statuses: BTreeMap<String, u64>,
    /// The slowest answer.
    pub(crate) worst: Duration,
    /// From the fault's end until requests succeeded again, where the scenario has one.
    pub(crate) recovery: Option<Duration>,
    /// Acknowledged writes missing afterwards (must be 0).
    pub(crate) lost: u64,
    pub(crate) checks: Vec<Check>,
    /// More figures for the report (markdown), after the checks.
    pub(crate) notes: String,
}

impl Outcome {
    /// An outcome with no figures yet.
    pub(crate) fn new(name: &'static str, injected: impl Into<String>) -> Self {
        Self {
            name,
            injected: injected.into(),
            requests: 0,
            statuses: BTreeMap::new(),
            worst: Duration::ZERO,
            recovery: None,
            lost: 0,
            checks: Vec::new(),
            notes: String::new(),
        }
    }

    /// A scenario that could not run to its end (its setup or harness failed).
    pub(crate) fn broken(name: &'static str, why: &str) -> Self {
        let mut outcome = Self::new(name, "(the scenario did not complete)");
        outcome.check("the scenario ran to its end", false, why);
        outcome
    }

    /// Records a check.
    pub(crate) fn check(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            what: what.into(),
            ok,
            detail: detail.into(),
        });
    }

    /// Counts `samples` into the figures.
    pub(crate) fn count(&mut self, samples: &[Sample]) {
        for sample in samples {
            self.requests += 1;
            let status = sample
                .status
                .map_or_else(|| "io".to_owned(), |s| s.to_string());
            *self.statuses.entry(status).or_default() += 1;
            self.worst = self.worst.max(sample.latency);
        }
    }

    /// Whether every check passed.
    pub(crate) fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|check| check.ok)
    }
}

/// Milliseconds, for the report.
pub(crate) fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// The report: the table, then every check.
pub(crate) fn render(outcomes: &[Outcome], pace: Pace, took: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Reliability run ({} form, soak {} min, {} s in all)\n",
        if pace.fast { "fast" } else { "full" },
        pace.soak.as_secs() / 60,
        took.as_secs()
    );
    out.push_str(
        "| Scenario | Injected | Requests | Outcomes | Worst latency | Recovery | Data lost | Result |\n\
         |---|---|---:|---|---:|---:|---:|---|\n",
    );
    for outcome in outcomes {
        let statuses = outcome
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            outcome.name,
            outcome.injected,
            outcome.requests,
            if statuses.is_empty() {
                "—".to_owned()
            } else {
                statuses
            },
            ms(outcome.worst),
            outcome.recovery.map_or_else(|| "—".to_owned(), ms),
            outcome.lost,
            if outcome.passed() { "pass" } else { "**FAIL**" },
        );
    }
    out.push_str("\n### Checks\n");
    for outcome in outcomes {
        let _ = writeln!(out, "\n**{}**\n", outcome.name);
        for check in &outcome.checks {
            let _ = write!(
                out,
                "- {} {}",
                if check.ok { "✓" } else { "✗ FAILED:" },
                check.what
            );
            if !check.detail.is_empty() {
                let _ = write!(out, " — {}", check.detail);
            }
            out.push('\n');
        }
        if !outcome.notes.is_empty() {
            let _ = write!(out, "\n{}", outcome.notes);
        }
    }
    out
}
