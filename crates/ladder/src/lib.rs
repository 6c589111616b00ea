//! The ladders of the demos, and what proves them.
//!
//! A demo's ladder is a row of compiled steps, `crates/<demo>/examples/stepN_<what>.rs`, from
//! the smallest correct server on plain hyper to the finished demo (its binary), which is the
//! last rung. Each step adds one concern and brings the why-tests that show it: they fail
//! against the step before, with the failure a user would meet, and pass against that step,
//! every later one and the finished demo. The `ladder` binary runs them:
//!
//! ```text
//! cargo run -p ladder -- list                        # the rungs and their why-tests
//! cargo run -p ladder -- check clock-sse step3_shutdown
//! cargo run -p ladder -- verify                      # every expectation, both directions
//! ```
//!
//! Every rung runs as its own process, started with `PORT=0` (the finished demo with
//! `--port 0`) and the settings a test asks for (`TICK_MS=1`, `STALL_TIMEOUT_MS=500`, ...), and
//! the why-tests talk to it over real sockets.
//!
//! A ladder for another demo is one more module like [`clock_sse`] and one more entry in
//! [`LADDERS`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub mod artifacts;
pub mod chat_sse;
pub mod clock_sse;
pub mod echo_ws;
pub mod probe;
pub mod rung;
pub mod source;
pub mod stock_ticker;

pub use rung::{Rung, Server};

/// Every demo's ladder, in the order `list` and `verify` show them.
pub const LADDERS: &[Ladder] = &[
    clock_sse::LADDER,
    chat_sse::LADDER,
    echo_ws::LADDER,
    stock_ticker::LADDER,
];

/// One demo's ladder.
#[derive(Debug)]
pub struct Ladder {
    /// The demo's package, which is also the name of its binary, the last rung.
    pub demo: &'static str,
    /// The steps below the finished demo, step 1 first.
    pub steps: &'static [Step],
}

/// One step: an example of the demo's package.
#[derive(Debug)]
pub struct Step {
    /// The example's name, `stepN_<what>`: `cargo run -p <demo> --example <name>`.
    pub name: &'static str,
    /// What the step adds over the one before, in a few words.
    pub adds: &'static str,
    /// The tests that show why the step is there.
    pub why_tests: &'static [WhyTest],
}

/// A test that shows why a step is there: it fails against the step before and passes from
/// that step on.
#[derive(Debug)]
pub struct WhyTest {
    /// Its name, as `list` and `verify` print it.
    pub name: &'static str,
    /// What it checks, in one sentence.
    pub checks: &'static str,
    /// The whole test's time limit; every wait inside it has a shorter one of its own.
    pub limit: Duration,
    /// Runs the test against a rung, which it starts as often as it needs.
    pub run: fn(Rung) -> Check,
}

/// What a why-test returns.
pub type Check = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What a why-test found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed: what went wrong, as a user of the server would say it.
    Fail(String),
    /// It cannot run here (signals, on a platform without them).
    CannotRun(String),
}

impl From<Result<(), String>> for Outcome {
    fn from(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self::Pass,
            Err(failure) => Self::Fail(failure),
        }
    }
}

impl Ladder {
    /// The rung called `name` (a step, or the demo's own name for the finished demo): its
    /// position, counting step 1 as 0 and the finished demo as the last.
    pub fn position(&self, name: &str) -> Option<usize> {
        if name == self.demo {
            return Some(self.steps.len());
        }
        self.steps.iter().position(|step| step.name == name)
    }

    /// The names of the rungs, the finished demo last.
    pub fn rung_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.steps.iter().map(|step| step.name).collect();
        names.push(self.demo);
        names
    }

    /// Every why-test with the position of the step that brings it.
    pub fn why_tests(&self) -> impl Iterator<Item = (usize, &'static WhyTest)> + '_ {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(position, step)| step.why_tests.iter().map(move |test| (position, test)))
    }

    /// What the why-test of the step at `introduced` must do on the rung at `rung`: fail on
    /// the step before it, pass on it and above, and nothing is asserted further down.
    pub fn expectation(introduced: usize, rung: usize) -> Option<Expect> {
        if rung >= introduced {
            Some(Expect::Pass)
        } else if rung + 1 == introduced {
            Some(Expect::Fail)
        } else {
            None
        }
    }
}

/// What a why-test must do on a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Pass: the rung has what the test checks.
    Pass,
    /// Fail: the rung is the step before the one that adds it.
    Fail,
}

/// Runs `test` against `rung` within the test's limit. Every server the test started is killed
/// when it returns, passed or not (see [`Server`]).
pub async fn run(test: &WhyTest, rung: &Rung) -> Outcome {
    match tokio::time::timeout(test.limit, (test.run)(rung.clone())).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Fail(format!(
            "the check did not finish within {} s: the server stopped answering",
            test.limit.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_test_fails_one_rung_below_its_step_and_passes_from_it_on() {
        assert_eq!(Ladder::expectation(0, 0), Some(Expect::Pass));
        assert_eq!(Ladder::expectation(2, 0), None);
        assert_eq!(Ladder::expectation(2, 1), Some(Expect::Fail));
        assert_eq!(Ladder::expectation(2, 2), Some(Expect::Pass));
        assert_eq!(Ladder::expectation(2, 5), Some(Expect::Pass));
    }

    #[test]
    fn the_finished_demo_is_the_last_rung() {
        let ladder = &clock_sse::LADDER;
        assert_eq!(ladder.position("step1_ticks"), Some(0));
        assert_eq!(ladder.position("clock-sse"), Some(ladder.steps.len()));
        assert_eq!(ladder.position("step9_nothing"), None);
        assert_eq!(ladder.rung_names().last(), Some(&"clock-sse"));
    }
}
