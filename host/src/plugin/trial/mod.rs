//! Trying a plugin before it serves. Every version the gateway loads (at start, on a
//! reload, a file swap or an upload) is first put through synthetic situations for
//! every route or user it will serve; a version that traps, runs out of fuel or
//! time, or answers nothing usable is refused with the situation that broke it, and
//! the running version keeps serving. `berry plugin test` runs the same trial and
//! prints every situation.
//!
//! - Strategies, per route: every backend healthy, the first one's circuit open,
//!   every backend down, the first one recovering; each with several sequence and
//!   random numbers. `select` must answer at least one enabled backend of the route;
//!   `observe` and `explain` must not fail.
//! - Auth policies: no token, an unknown token, and the token of every configured
//!   user whose token is in the configuration (not `token_sha256` ones). Any
//!   answer is usable; one that admits a caller without credentials, or refuses a
//!   configured user, is reported.
//! - Both: the same input must give the same answer on another instance (the
//!   contract's determinism); a plugin that does not is reported.
//!
//! Only failures refuse a version; what is reported as a warning is logged.

mod auth;
mod strategy;

use std::fmt::Write as _;

pub(super) use auth::run as auth;
pub(super) use strategy::run as strategy;

/// How one situation went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Served, but worth the author's attention.
    Warn(String),
    /// Refuses the version.
    Fail(String),
}

/// One situation the plugin was put in, and what it answered.
#[derive(Debug, Clone)]
pub struct Case {
    pub situation: String,
    pub answer: String,
    pub verdict: Verdict,
}

/// The outcome of a trial.
#[derive(Debug, Default)]
pub struct Report {
    /// Keep passing situations too (`berry plugin test`); a load keeps only the
    /// others, which may be few among tens of thousands.
    pub verbose: bool,
    pub passed: usize,
    pub cases: Vec<Case>,
}

/// Failures after which a trial stops: the version is refused anyway.
const MAX_FAILURES: usize = 10;

/// Routes (strategies) given every situation; beyond them, routes are tried healthy
/// and all down only, so that a config of 20,000 models still loads quickly.
pub const ROUTES_IN_FULL: usize = 256;
/// (sequence, random) pairs each situation is tried with: small and large,
/// consecutive and scattered, so that a plugin failing "sometimes" is caught.
pub const DRAWS: [(u64, u64); 8] = [
    (0, 0),
    (1, u64::MAX),
    (2, 0x9E37_79B9_7F4A_7C15),
    (3, 1 << 63),
    (5, 12_345),
    (8, 0x0123_4567_89AB_CDEF),
    (13, 0xDEAD_BEEF),
    (1_000_003, 0x5555_5555_5555_5555),
];
/// Answers replayed on a second instance to check determinism.
pub const REPLAYED: usize = 32;

impl Report {
    pub fn new(verbose: bool) -> Self {
        Report { verbose, ..Report::default() }
    }

    pub fn push(&mut self, situation: impl Into<String>, answer: impl Into<String>, verdict: Verdict) {
        if verdict == Verdict::Pass {
            self.passed += 1;
            if !self.verbose {
                return;
            }
        }
        self.cases.push(Case { situation: situation.into(), answer: answer.into(), verdict });
    }

    /// Whether enough has failed to stop trying.
    pub fn given_up(&self) -> bool {
        self.cases.iter().filter(|c| matches!(c.verdict, Verdict::Fail(_))).count() >= MAX_FAILURES
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<&Case> {
        self.cases.iter().find(|c| matches!(c.verdict, Verdict::Fail(_)))
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(|c| matches!(c.verdict, Verdict::Warn(_)))
    }

    /// Whether every situation passed, warnings included.
    pub fn clean(&self) -> bool {
        self.cases.iter().all(|c| c.verdict == Verdict::Pass)
    }

    /// "40 situations: 38 passed, 1 warning, 1 failed".
    pub fn summary(&self) -> String {
        let failed = self.cases.iter().filter(|c| matches!(c.verdict, Verdict::Fail(_))).count();
        let warned = self.warnings().count();
        format!(
            "{} situations: {} passed, {warned} warning{}, {failed} failed",
            self.passed + failed + warned,
            self.passed,
            if warned == 1 { "" } else { "s" }
        )
    }

    /// Why a version is refused, for the load error: the first failure, and how to
    /// see the rest.
    pub fn refusal(&self) -> Option<String> {
        let case = self.failure()?;
        let Verdict::Fail(why) = &case.verdict else { return None };
        Some(format!(
            "failed its trial ({}): {}: {why} (answer: {}); `berry plugin test <file> --config <config>` shows every situation",
            self.summary(),
            case.situation,
            case.answer
        ))
    }

    /// The whole report, one situation per line, as `berry plugin test` prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for case in &self.cases {
            let (mark, note) = match &case.verdict {
                Verdict::Pass => ("pass", String::new()),
                Verdict::Warn(why) => ("WARN", format!("\n        {why}")),
                Verdict::Fail(why) => ("FAIL", format!("\n        {why}")),
            };
            let _ = writeln!(out, "{mark}  {} → {}{note}", case.situation, case.answer);
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }
}

/// A call whose answer is asked again of another instance (determinism).
pub struct Sample<I> {
    pub situation: String,
    pub input: I,
    /// The answer, as the report shows it.
    pub answer: String,
}

/// Ask every sample again of another instance (`ask` makes the call and shows its
/// answer): the same input must get the same answer. `hint` tells the author what to
/// change when it does not.
pub fn replay<K: crate::plugin::loaded::Kind, I>(
    trial: &mut crate::plugin::loaded::Trial<'_, K>,
    report: &mut Report,
    samples: &[Sample<I>],
    ask: impl Fn(&mut crate::plugin::loaded::Trial<'_, K>, &I) -> Result<String, String>,
    hint: &str,
) {
    if samples.is_empty() || report.failure().is_some() {
        return;
    }
    if let Err(e) = trial.another() {
        report.push("another instance", "could not be made", Verdict::Fail(e));
        return;
    }
    let mut differing = Vec::new();
    for sample in samples {
        match ask(trial, &sample.input) {
            Ok(answer) if answer == sample.answer => {}
            Ok(answer) => differing.push(format!("{}: {}, then {answer}", sample.situation, sample.answer)),
            Err(e) => {
                report.push(format!("{} (on another instance)", sample.situation), "failed", Verdict::Fail(e));
                return;
            }
        }
    }
    let situation = format!("determinism: {} answers asked again of another instance", samples.len());
    match differing.first() {
        None => report.push(situation, "the same answers", Verdict::Pass),
        Some(first) => report.push(
            situation,
            format!("{} differ", differing.len()),
            Verdict::Warn(format!("the same input got another answer ({first}): {hint}")),
        ),
    }
}

/// Shorten an answer for the report.
pub fn brief(text: impl std::fmt::Display) -> String {
    crate::telemetry::clean::clip(&text.to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_what_failed_and_how_to_see_everything() {
        let mut report = Report::new(true);
        report.push("route m, every backend healthy, sequence 0", "[0, 1]", Verdict::Pass);
        report.push("route m, determinism", "[1, 0] then [0, 1]", Verdict::Warn("not deterministic".into()));
        assert!(report.failure().is_none() && !report.clean());
        report.push("route m, every backend down, sequence 3", "trap", Verdict::Fail("trapped: unreachable".into()));
        assert_eq!(report.summary(), "3 situations: 1 passed, 1 warning, 1 failed");
        let refusal = report.refusal().expect("refused");
        assert!(refusal.contains("every backend down, sequence 3: trapped: unreachable"), "{refusal}");
        assert!(report.render().contains("FAIL  route m, every backend down"), "{}", report.render());
    }
}
