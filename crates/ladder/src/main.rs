//! The ladder checker: runs every rung of every demo's ladder as a real server and proves that
//! each step's why-test fails on the step before and passes from that step on.
//!
//! ```text
//! cargo run -p ladder -- list                          # the rungs and their why-tests
//! cargo run -p ladder -- check clock-sse step3_shutdown
//! cargo run -p ladder -- why clock-sse step3_shutdown  # its why-tests on the step before, then on it
//! cargo run -p ladder -- verify                        # for CI: every expectation, both ways
//! ```
//!
//! `check` and `verify` first build the rungs (`cargo build -p <demo> --examples --bins`), then
//! start each as a child process on a free port. The library (`src/lib.rs`) says how a ladder
//! is described; `src/clock_sse.rs` has the clock's.

use std::process::ExitCode;
use std::time::Instant;

use ladder::artifacts::{self, Artifacts, Kind};
use ladder::rung::PortBy;
use ladder::{Expect, LADDERS, Ladder, Outcome, Rung, source};

const USAGE: &str =
    "usage: cargo run -p ladder -- <list | check DEMO RUNG | why DEMO STEP | verify>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["list"] => {
            list();
            Ok(true)
        }
        ["verify"] => block_on(verify()),
        ["check", demo, rung] => block_on(check(demo, rung)),
        ["why", demo, step] => block_on(why(demo, step)),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(future: impl Future<Output = Result<bool, String>>) -> Result<bool, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("could not start the runtime: {error}"))?
        .block_on(future)
}

fn list() {
    for ladder in LADDERS {
        println!(
            "{}: {} steps, then the finished demo",
            ladder.demo,
            ladder.steps.len()
        );
        for step in ladder.steps {
            println!(
                "  {:<18} cargo run -p {} --example {}",
                step.name, ladder.demo, step.name
            );
            println!("  {:<18} adds {}", "", step.adds);
            for test in step.why_tests {
                println!("  {:<18} why-test {}:", "", test.name);
                print_wrapped(&format!("{:<22}", ""), test.checks);
            }
        }
        println!(
            "  {:<18} cargo run -p {}: the finished demo, where every why-test must pass too",
            ladder.demo, ladder.demo
        );
    }
}

/// The rungs of `ladder` as built: its steps, then the finished demo.
fn rungs(ladder: &Ladder, artifacts: &Artifacts) -> Result<Vec<Rung>, String> {
    let built = |kind, name: &str, port_by| {
        let program = artifacts.get(ladder.demo, kind, name).ok_or_else(|| {
            format!(
                "the build made no `{name}` for {}: is it in crates/{}/?",
                ladder.demo, ladder.demo
            )
        })?;
        Ok(Rung {
            name: name.to_owned(),
            program: program.to_path_buf(),
            port_by,
        })
    };
    let mut rungs = ladder
        .steps
        .iter()
        .map(|step| built(Kind::Example, step.name, PortBy::EnvVar))
        .collect::<Result<Vec<_>, String>>()?;
    rungs.push(built(Kind::Bin, ladder.demo, PortBy::Flag)?);
    Ok(rungs)
}

fn build(demos: &[&str]) -> Result<Artifacts, String> {
    let packages: Vec<String> = demos.iter().map(|demo| format!("-p {demo}")).collect();
    println!(
        "building the rungs: cargo build {} --examples --bins",
        packages.join(" ")
    );
    artifacts::build(demos)
}

/// For CI and teachers: every why-test fails on the step before its own and passes on its step,
/// every later one and the finished demo; and the step files are what the book needs.
async fn verify() -> Result<bool, String> {
    let demos: Vec<&str> = LADDERS.iter().map(|ladder| ladder.demo).collect();
    let artifacts = build(&demos)?;
    let started = Instant::now();
    let mut tally = Tally::default();
    for ladder in LADDERS {
        let rungs = rungs(ladder, &artifacts)?;
        println!(
            "\n{}: {} steps, then the finished demo",
            ladder.demo,
            ladder.steps.len()
        );
        check_step_files(ladder, &mut tally);
        for (introduced, test) in ladder.why_tests() {
            println!(
                "  {} (brought by {}):",
                test.name, ladder.steps[introduced].name
            );
            print_wrapped("    ", test.checks);
            for (position, rung) in rungs.iter().enumerate() {
                let Some(expect) = Ladder::expectation(introduced, position) else {
                    continue;
                };
                let began = Instant::now();
                let outcome = ladder::run(test, rung).await;
                let took = began.elapsed().as_secs_f64();
                let (verdict, said) = match (expect, outcome) {
                    (Expect::Pass, Outcome::Pass) => (Verdict::Ok, "passes".to_owned()),
                    (Expect::Fail, Outcome::Fail(failure)) => {
                        (Verdict::Ok, format!("fails, as it should: {failure}"))
                    }
                    (Expect::Pass, Outcome::Fail(failure)) => (
                        Verdict::Failed,
                        format!("should pass, but fails: {failure}"),
                    ),
                    (Expect::Fail, Outcome::Pass) => (
                        Verdict::Failed,
                        "should fail (it is the step before), but passes: this why-test shows \
                         nothing that the step adds"
                            .to_owned(),
                    ),
                    (_, Outcome::CannotRun(why)) => {
                        (Verdict::Skipped, format!("cannot run here: {why}"))
                    }
                };
                let what = format!("{} {} on {}", ladder.demo, test.name, rung.name);
                tally.record(verdict, what);
                println!("    {} {:<18} ({took:.1} s)", verdict.label(), rung.name);
                print_wrapped("           ", &said);
            }
        }
    }
    println!(
        "\nthe why-tests took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(tally.report("verify"))
}

/// The step files' own checks: step 1 small and without the kit, every step opening with `//!`
/// and every book anchor closed.
fn check_step_files(ladder: &Ladder, tally: &mut Tally) {
    for (number, step) in ladder.steps.iter().enumerate() {
        let path = source::step_file(ladder, step.name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                let what = format!("{}: cannot read {}: {error}", step.name, path.display());
                println!("  {} {what}", Verdict::Failed.label());
                tally.record(Verdict::Failed, what);
                continue;
            }
        };
        let mut problems = Vec::new();
        if !text.starts_with("//!") {
            problems.push("it does not open with a `//!` comment saying what it adds".to_owned());
        }
        if let Err(problem) = source::anchors(&text) {
            problems.push(problem);
        }
        let mut said = format!("{}: opens with //!, anchors closed", step.name);
        if number == 0 {
            match source::check_step_one(&text) {
                Ok(lines) => {
                    said = format!(
                        "{said}, {lines} non-blank lines (at most {}), no realtime_kit",
                        source::STEP_ONE_MAX_LINES
                    )
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            println!("  {} {said}", Verdict::Ok.label());
            tally.record(Verdict::Ok, said);
        } else {
            let what = format!("{}: {}", step.name, problems.join("; "));
            println!("  {} {what}", Verdict::Failed.label());
            tally.record(Verdict::Failed, what);
        }
    }
}

/// The ladder of `demo`, or an error that says where to find the ladders.
fn find_ladder(demo: &str) -> Result<&'static Ladder, String> {
    LADDERS
        .iter()
        .find(|ladder| ladder.demo == demo)
        .ok_or_else(|| {
            format!("there is no ladder for `{demo}`; `cargo run -p ladder -- list` shows them")
        })
}

/// For a reader of the book: why a step is there. Runs the why-tests it brings against the step
/// before, where they fail with what a user would meet, then against the step, where they pass.
async fn why(demo: &str, name: &str) -> Result<bool, String> {
    let ladder = find_ladder(demo)?;
    let position = ladder
        .steps
        .iter()
        .position(|step| step.name == name)
        .filter(|&position| position > 0)
        .ok_or_else(|| {
            let names: Vec<&str> = ladder.steps[1..].iter().map(|step| step.name).collect();
            format!(
                "{demo} has no step `{name}` with a step before it; try one of {}",
                names.join(", ")
            )
        })?;
    let artifacts = build(&[demo])?;
    let rungs = rungs(ladder, &artifacts)?;
    let step = &ladder.steps[position];
    let mut tally = Tally::default();
    for test in step.why_tests {
        println!("{} ({}):", test.name, step.name);
        print_wrapped("  ", test.checks);
        for (rung, expect) in [
            (&rungs[position - 1], Expect::Fail),
            (&rungs[position], Expect::Pass),
        ] {
            let (verdict, said) = match (expect, ladder::run(test, rung).await) {
                (Expect::Fail, Outcome::Fail(failure)) => {
                    (Verdict::Ok, format!("fails: {failure}"))
                }
                (Expect::Pass, Outcome::Pass) => (Verdict::Ok, "passes".to_owned()),
                (_, Outcome::CannotRun(why)) => {
                    (Verdict::Skipped, format!("cannot run here: {why}"))
                }
                (Expect::Fail, Outcome::Pass) => {
                    (Verdict::Failed, "passes, but should fail here".to_owned())
                }
                (Expect::Pass, Outcome::Fail(failure)) => (
                    Verdict::Failed,
                    format!("should pass, but fails: {failure}"),
                ),
            };
            println!("  on {}:", rung.name);
            print_wrapped("    ", &said);
            tally.record(verdict, format!("{} on {}", test.name, rung.name));
        }
    }
    println!();
    Ok(tally.report("why"))
}

/// For a learner: runs one rung against every why-test up to its step, and says what fails.
async fn check(demo: &str, name: &str) -> Result<bool, String> {
    let ladder = find_ladder(demo)?;
    let position = ladder.position(name).ok_or_else(|| {
        format!(
            "{demo} has no rung `{name}`; its rungs are {}",
            ladder.rung_names().join(", ")
        )
    })?;
    let artifacts = build(&[demo])?;
    let rung = rungs(ladder, &artifacts)?.swap_remove(position);
    let upto = ladder.steps.get(position).map_or(demo, |step| step.name);
    println!(
        "checking {name} against the why-tests of {} to {upto}",
        ladder.steps[0].name
    );
    let mut tally = Tally::default();
    for (introduced, test) in ladder.why_tests().filter(|(at, _)| *at <= position) {
        let outcome = ladder::run(test, &rung).await;
        let (verdict, said) = match outcome {
            Outcome::Pass => (Verdict::Ok, test.checks.to_owned()),
            Outcome::Fail(failure) => (Verdict::Failed, failure),
            Outcome::CannotRun(why) => (Verdict::Skipped, format!("cannot run here: {why}")),
        };
        println!(
            "  {} {} (from {})",
            verdict.label(),
            test.name,
            ladder.steps[introduced].name
        );
        print_wrapped("         ", &said);
        tally.record(verdict, test.name.to_owned());
    }
    let file = if position < ladder.steps.len() {
        format!("crates/{demo}/examples/{name}.rs")
    } else {
        format!("crates/{demo}/src/lib.rs")
    };
    println!();
    if tally.failed.is_empty() {
        let next = match ladder.steps.get(position + 1) {
            Some(step) => format!("Next, {} adds {}.", step.name, step.adds),
            None if position < ladder.steps.len() => format!(
                "Next is the finished demo, {demo}: `cargo run -p ladder -- check {demo} {demo}`."
            ),
            None => "It is the top of the ladder.".to_owned(),
        };
        print_wrapped(
            "",
            &format!("{name} passes every why-test up to it. {next}"),
        );
    } else {
        print_wrapped(
            "",
            &format!(
                "{name} fails {} of its {} why-tests. Each message above says what a user of this \
                 server would meet; the notes at the top of {file} say what each step adds and why.",
                tally.failed.len(),
                tally.failed.len() + tally.passed + tally.skipped
            ),
        );
    }
    Ok(tally.failed.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Failed,
    Skipped,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok  ",
            Verdict::Failed => "FAIL",
            Verdict::Skipped => "skip",
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    skipped: usize,
    failed: Vec<String>,
}

impl Tally {
    fn record(&mut self, verdict: Verdict, what: String) {
        match verdict {
            Verdict::Ok => self.passed += 1,
            Verdict::Skipped => self.skipped += 1,
            Verdict::Failed => self.failed.push(what),
        }
    }

    /// Prints the closing line and the failures; `true` when nothing failed.
    fn report(&self, command: &str) -> bool {
        let skipped = if self.skipped > 0 {
            format!(", {} skipped", self.skipped)
        } else {
            String::new()
        };
        println!(
            "{command}: {} passed, {} failed{skipped}",
            self.passed,
            self.failed.len()
        );
        for what in &self.failed {
            println!("  failed: {what}");
        }
        self.failed.is_empty()
    }
}

/// Prints `text` in lines of at most 100 columns, each starting with `indent`.
fn print_wrapped(indent: &str, text: &str) {
    let width = 100usize.saturating_sub(indent.len()).max(40);
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            println!("{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        println!("{indent}{line}");
    }
}
