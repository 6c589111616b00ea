//! The step files, read as text: what the ladders promise a reader before any server runs.
//!
//! Run with `cargo test -p ladder --test steps`.

use ladder::{LADDERS, source};

fn read(ladder: &ladder::Ladder, step: &str) -> String {
    let path = source::step_file(ladder, step);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Step 1 of every ladder is the file a reader copies into a fresh hyper project: at most 100
/// non-blank lines, its page included, and nothing from the kit.
#[test]
fn step_one_is_small_and_uses_no_kit() {
    for ladder in LADDERS {
        let step = ladder.steps[0].name;
        if let Err(problem) = source::check_step_one(&read(ladder, step)) {
            panic!("{} {step}: {problem}", ladder.demo);
        }
    }
}

/// Every step opens with `//!` (what it adds and why, how to run it), every anchor the book
/// includes is closed, and each step after the first marks what it changed.
#[test]
fn every_step_opens_with_its_reason_and_closes_its_anchors() {
    for ladder in LADDERS {
        for (number, step) in ladder.steps.iter().enumerate() {
            let text = read(ladder, step.name);
            assert!(
                text.starts_with("//!"),
                "{} {} opens with //!",
                ladder.demo,
                step.name
            );
            assert!(
                text.contains(&format!(
                    "cargo run -p {} --example {}",
                    ladder.demo, step.name
                )),
                "{} {} says how to run it",
                ladder.demo,
                step.name
            );
            let anchors = source::anchors(&text)
                .unwrap_or_else(|problem| panic!("{} {}: {problem}", ladder.demo, step.name));
            if number > 0 {
                assert!(
                    !anchors.is_empty(),
                    "{} {} marks what changed with // ANCHOR:",
                    ladder.demo,
                    step.name
                );
            }
        }
    }
}

/// Every step names itself `stepN_<what>` in order, and each from step 2 on brings a why-test.
#[test]
fn steps_are_numbered_and_each_later_one_has_a_why_test() {
    for ladder in LADDERS {
        assert!(
            ladder.steps.len() >= 4,
            "{} has at least four steps",
            ladder.demo
        );
        for (index, step) in ladder.steps.iter().enumerate() {
            let prefix = format!("step{}_", index + 1);
            assert!(
                step.name.starts_with(&prefix) && step.name.len() > prefix.len(),
                "{}: {} should be {prefix}<what>",
                ladder.demo,
                step.name
            );
            assert!(
                index == 0 || !step.why_tests.is_empty(),
                "{} {} has no why-test",
                ladder.demo,
                step.name
            );
        }
        let mut names: Vec<_> = ladder.why_tests().map(|(_, test)| test.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            count,
            "{}: why-test names are unique",
            ladder.demo
        );
    }
}

/// No two ladders share a step name: cargo builds the examples of every package into one
/// `target/<profile>/examples/`, so two steps of one name overwrite each other, and a ladder
/// would run another demo's step (cargo only warns, "output filename collision").
#[test]
fn step_names_are_unique_across_the_ladders() {
    let mut owners = std::collections::HashMap::new();
    for ladder in LADDERS {
        for step in ladder.steps {
            if let Some(other) = owners.insert(step.name, ladder.demo) {
                panic!(
                    "{other} and {} both have a step called {}: rename one, since cargo puts \
                     both in the same target/<profile>/examples/{}",
                    ladder.demo, step.name, step.name
                );
            }
        }
    }
}
