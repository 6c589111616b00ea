//! The exercise checker: lists the exercises, checks one, prints its hints, and verifies them all.
//!
//! Run with
//!
//! ```text
//! cargo run -p exercises -- list            # every exercise, its chapter, done or pending
//! cargo run -p exercises -- check clock_retry
//! cargo run -p exercises -- hint clock_retry    # a nudge: where to look
//! cargo run -p exercises -- hint clock_retry 2  # the approach, in words
//! cargo run -p exercises -- verify          # for CI and teachers: starters fail, solutions pass
//! ```
//!
//! It only runs cargo: `check` is `cargo test -p exercises --features check --test <name>`, so a
//! student can always run that by hand and read every line of the output.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// One `[[exercise]]` of `info.toml`.
#[derive(Debug, Default)]
struct Exercise {
    /// The module, the test file and the argument to `check`.
    name: String,
    /// The demo crate the exercise grows from.
    demo: String,
    /// The book chapter that explains what the exercise builds on.
    chapter: String,
    /// 1 (a first small change) to 3 (a real feature).
    difficulty: String,
    /// What the finished exercise does, in one sentence.
    goal: String,
    /// The first hint, printed by `hint <name>`: a nudge (where to look, which concept). The
    /// hints are kept out of the starter so a student reads them only when stuck.
    hint: String,
    /// The second hint, printed by `hint <name> 2`: the approach, the steps in words. Neither
    /// hint gives the code: `verify` checks that no line reads like Rust.
    hint2: String,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads `info.toml`. It uses a small subset of TOML (`[[exercise]]` tables of `key = "value"`
/// and `key = """` multi-line strings), read here by hand so the checker needs no parser crate.
fn load_exercises() -> Result<Vec<Exercise>, String> {
    let path = crate_dir().join("info.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    parse_exercises(&text)
}

/// The exercises of `text`, in the format of `info.toml`.
fn parse_exercises(text: &str) -> Result<Vec<Exercise>, String> {
    let mut exercises: Vec<Exercise> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[exercise]]" {
            exercises.push(Exercise::default());
            continue;
        }
        let problem = |what: &str| format!("info.toml line {}: {what}", number + 1);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| problem("expected key = \"value\""))?;
        let value = value.trim();
        let value = if value == "\"\"\"" {
            let mut collected = Vec::new();
            loop {
                let (_, next) = lines.next().ok_or_else(|| problem("unterminated \"\"\""))?;
                if next.trim() == "\"\"\"" {
                    break collected.join("\n");
                }
                collected.push(next.to_string());
            }
        } else {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| problem("expected a quoted value"))?
                .replace("\\\"", "\"")
        };
        let exercise = exercises
            .last_mut()
            .ok_or_else(|| problem("a key before the first [[exercise]]"))?;
        match key.trim() {
            "name" => exercise.name = value,
            "demo" => exercise.demo = value,
            "chapter" => exercise.chapter = value,
            "difficulty" => exercise.difficulty = value,
            "goal" => exercise.goal = value,
            "hint" => exercise.hint = value,
            "hint2" => exercise.hint2 = value,
            other => return Err(problem(&format!("unknown key `{other}`"))),
        }
    }
    Ok(exercises)
}

/// Why `line` of a hint reads like Rust code to paste, if it does. A hint may name things to look
/// up (`SseResponse`, `Heartbeat`, `realtime_kit::sse`); it never spells out a statement, a match
/// arm, an `.await` or a chain of calls, which a student would copy without thinking.
fn code_in_hint(line: &str) -> Option<&'static str> {
    let line = line.trim();
    if line.ends_with(';') {
        return Some("ends with `;`");
    }
    if line.ends_with('{') || line.starts_with('}') {
        return Some("opens or closes a block");
    }
    if line.contains("=>") {
        return Some("has a match arm (`=>`)");
    }
    if line.contains(".await") {
        return Some("has `.await`");
    }
    // Inline code is what lies between a pair of backticks: every second piece.
    for code in line.split('`').skip(1).step_by(2) {
        if code.contains("let ") {
            return Some("quotes a `let`");
        }
        if code.contains('=') {
            return Some("quotes an assignment or a comparison");
        }
        if code.contains(").") || code.contains(")?.") {
            return Some("quotes a chain of calls");
        }
        if code.contains('|') {
            return Some("quotes a closure");
        }
    }
    None
}

/// The lines of `exercise`'s hints that read like code, each with the reason.
fn code_lines_in_hints(exercise: &Exercise) -> Vec<String> {
    [("hint", &exercise.hint), ("hint2", &exercise.hint2)]
        .into_iter()
        .flat_map(|(key, hint)| hint.lines().map(move |line| (key, line)))
        .filter_map(|(key, line)| {
            code_in_hint(line).map(|why| format!("{key} of {}: {why}: {}", exercise.name, line))
        })
        .collect()
}

/// Prints hint `level` (1 the nudge, 2 the approach) of `exercise`, and how to go further.
fn hint(exercise: &Exercise, level: u8) -> ExitCode {
    let name = &exercise.name;
    println!("{name}: {}\n", exercise.goal);
    if level == 1 {
        println!(
            "Hint 1 of 2, where to look:\n{}\n",
            exercise.hint.trim_end()
        );
        println!("Still stuck? `cargo run -p exercises -- hint {name} 2` gives the approach.");
    } else {
        println!(
            "Hint 2 of 2, the approach:\n{}\n",
            exercise.hint2.trim_end()
        );
        println!(
            "That is the last hint: the code is yours to write. `cargo run -p exercises -- check \
             {name}` says what is still missing."
        );
    }
    ExitCode::SUCCESS
}

/// One `[[test]]` target of this crate's `Cargo.toml`, as far as `verify` needs it.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestTarget {
    /// The target's name: `--test <name>` runs it.
    name: String,
    /// Its file, relative to the crate.
    path: String,
    /// Whether `required-features` names `check`, which keeps it out of a plain `cargo test`.
    needs_check: bool,
}

/// The `[[test]]` targets declared in `manifest`, read line by line like `info.toml`: each
/// `key = value` after a `[[test]]` header belongs to that target, until the next `[` header.
fn test_targets(manifest: &str) -> Vec<TestTarget> {
    let mut targets: Vec<TestTarget> = Vec::new();
    let mut in_test = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_test = line == "[[test]]";
            if in_test {
                targets.push(TestTarget::default());
            }
            continue;
        }
        if !in_test || line.starts_with('#') {
            continue;
        }
        let (Some(target), Some((key, value))) = (targets.last_mut(), line.split_once('=')) else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "name" => target.name = value.trim_matches('"').to_string(),
            "path" => target.path = value.trim_matches('"').to_string(),
            "required-features" => target.needs_check = value.contains("\"check\""),
            _ => {}
        }
    }
    targets
}

/// Whether `targets` has exercise `name`'s test, requiring `check`. Without it (autotests is
/// off) `check <name>` would find no test to run, and a plain `cargo test` would build it.
fn declares_test(targets: &[TestTarget], name: &str) -> bool {
    targets.iter().any(|target| {
        target.name == name && target.path == format!("tests/{name}.rs") && target.needs_check
    })
}

/// A cargo command on this crate; `CARGO` is set by `cargo run`, so the same toolchain runs.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(crate_dir());
    command
}

/// Runs the tests of one exercise; `true` when they all pass.
fn run_tests(name: &str, features: &str, quiet: bool) -> bool {
    let mut command = cargo();
    command.args([
        "test",
        "-p",
        "exercises",
        "--features",
        features,
        "--test",
        name,
    ]);
    if quiet {
        command
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    command.status().is_ok_and(|status| status.success())
}

/// Runs `command` quietly; `true` when it succeeds. Prints its output when it fails.
fn succeeds(mut command: Command) -> bool {
    match command.output() {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprint!("{}", String::from_utf8_lossy(&output.stdout));
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
            false
        }
        Err(error) => {
            eprintln!("could not run {command:?}: {error}");
            false
        }
    }
}

fn find<'a>(exercises: &'a [Exercise], name: &str) -> Result<&'a Exercise, String> {
    exercises.iter().find(|e| e.name == name).ok_or_else(|| {
        format!("no exercise named `{name}`; `cargo run -p exercises -- list` shows them all")
    })
}

/// Whether the crate and its tests compile; without that, every exercise would look pending.
fn compiles() -> bool {
    let mut build = cargo();
    build.args([
        "test",
        "-p",
        "exercises",
        "--features",
        "check",
        "--no-run",
        "--quiet",
    ]);
    build.stdout(Stdio::null()).stderr(Stdio::null());
    build.status().is_ok_and(|status| status.success())
}

fn list(exercises: &[Exercise]) -> ExitCode {
    // On stderr, so that stdout stays the table alone.
    eprintln!("compiling the exercises and their tests (the first time takes a minute or two)...");
    if !compiles() {
        println!(
            "the exercises do not compile: `cargo run -p exercises -- check <name>` on the one you \
             are editing shows the compiler's errors (and `git diff crates/exercises` what changed)"
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{:<22} {:<14} {:<24} {:<5} status",
        "exercise", "demo", "chapter", "level"
    );
    let mut done = 0;
    for exercise in exercises {
        let passed = run_tests(&exercise.name, "check", true);
        done += usize::from(passed);
        println!(
            "{:<22} {:<14} {:<24} {:<5} {}",
            exercise.name,
            exercise.demo,
            exercise.chapter,
            exercise.difficulty,
            if passed { "done" } else { "pending" }
        );
    }
    println!("{done} of {} done", exercises.len());
    ExitCode::SUCCESS
}

fn check(exercise: &Exercise) -> ExitCode {
    println!("checking `{}`: {}", exercise.name, exercise.goal);
    eprintln!(
        "compiling `{}` and its tests, then running them (the first build takes a minute or \
         two)...",
        exercise.name
    );
    if run_tests(&exercise.name, "check", false) {
        println!(
            "\n`{}` is done: every test passes. Well done! Compare with solutions/{}.rs.",
            exercise.name, exercise.name
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "\n`{}` is not done yet: read the compiler's errors or the failing test's message \
             above, then the TODOs in crates/exercises/exercises/{}.rs. \
             Stuck? cargo run -p exercises -- hint {}",
            exercise.name, exercise.name, exercise.name
        );
        ExitCode::FAILURE
    }
}

/// For CI and teachers: proves every starter compiles and fails, every solution passes, and the
/// crate is clippy and rustfmt clean in both modes.
fn verify(exercises: &[Exercise]) -> ExitCode {
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut record = |ok: bool, what: String| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if ok {
            passed += 1;
        } else {
            failed.push(what);
        }
    };
    for features in ["check", "check,solutions"] {
        // Progress goes to stderr; stdout is the list of checks.
        eprintln!("building with --features {features} (the first build takes a few minutes)...");
        let mut build = cargo();
        build.args([
            "test",
            "-p",
            "exercises",
            "--features",
            features,
            "--no-run",
        ]);
        build.arg("--quiet");
        record(
            succeeds(build),
            format!("builds with --features {features}"),
        );
        eprintln!("running clippy with --features {features}...");
        let mut clippy = cargo();
        clippy.args(["clippy", "-p", "exercises", "--all-targets", "--features"]);
        clippy.args([features, "--quiet", "--", "-D", "warnings"]);
        record(
            succeeds(clippy),
            format!("clippy -D warnings with --features {features}"),
        );
    }
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).unwrap_or_default();
    let targets = test_targets(&manifest);
    eprintln!("running each exercise's tests on its starter, then on its solution...");
    for exercise in exercises {
        let name = &exercise.name;
        record(
            declares_test(&targets, name),
            format!("{name}: Cargo.toml declares its [[test]], requiring the check feature"),
        );
        record(
            !exercise.hint.trim().is_empty() && !exercise.hint2.trim().is_empty(),
            format!("{name}: info.toml gives both hints (hint, hint2)"),
        );
        let code = code_lines_in_hints(exercise);
        for line in &code {
            eprintln!("info.toml, {line}");
        }
        record(
            code.is_empty(),
            format!("{name}: no hint line reads like code"),
        );
        let starter = crate_dir().join(format!("exercises/{name}.rs"));
        let marked = std::fs::read_to_string(&starter).is_ok_and(|text| text.contains("// TODO:"));
        record(
            marked,
            format!("{name}: the starter marks the work with // TODO:"),
        );
        // rustfmt may spread the `exercise!(...)` call over lines: compare without whitespace.
        let listed = std::fs::read_to_string(crate_dir().join("src/lib.rs")).is_ok_and(|text| {
            let text: String = text.split_whitespace().collect();
            text.contains(&format!("exercise!({name},"))
        });
        record(listed, format!("{name}: src/lib.rs compiles it"));
        for file in [
            format!("exercises/{name}.rs"),
            format!("solutions/{name}.rs"),
            format!("tests/{name}.rs"),
        ] {
            record(crate_dir().join(&file).is_file(), format!("{file} exists"));
        }
        record(
            !run_tests(name, "check", true),
            format!("{name}: the starter fails its tests"),
        );
        record(
            run_tests(name, "check,solutions", true),
            format!("{name}: the solution passes its tests"),
        );
    }
    let mut rustfmt = Command::new("rustfmt");
    rustfmt.args(["--check", "--edition", "2024"]);
    for dir in ["src", "src/bin", "exercises", "solutions", "tests"] {
        rustfmt.args(rust_files(&crate_dir().join(dir)));
    }
    record(succeeds(rustfmt), "rustfmt --check".to_string());
    println!("verify: {passed} passed, {} failed", failed.len());
    for what in &failed {
        println!("  failed: {what}");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    files
}

const USAGE: &str =
    "usage: cargo run -p exercises -- <list | check NAME | hint NAME [1 | 2] | verify>";

fn main() -> ExitCode {
    let exercises = match load_exercises() {
        Ok(exercises) => exercises,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let found = match args.as_slice() {
        ["list"] => return list(&exercises),
        ["verify"] => return verify(&exercises),
        ["check", name] => find(&exercises, name).map(check),
        ["hint", name] | ["hint", name, "1"] => find(&exercises, name).map(|e| hint(e, 1)),
        ["hint", name, "2"] => find(&exercises, name).map(|e| hint(e, 2)),
        ["hint", name, _] => Err(format!(
            "there are two hints: `cargo run -p exercises -- hint {name}` gives the first, \
             `hint {name} 2` the second"
        )),
        _ => Err(USAGE.to_string()),
    };
    found.unwrap_or_else(|error| {
        eprintln!("{error}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both hint levels are read, multi-line strings keep their lines, and `\"` is unescaped.
    #[test]
    fn info_toml_subset_is_parsed() {
        let text = r#"
# a comment
[[exercise]]
name = "clock_retry"
goal = "Send \"retry\" first."
hint = """
Look at `SseResponse`.
"""
hint2 = """
First this,
then that.
"""
"#;
        let exercises = parse_exercises(text).expect("parses");
        assert_eq!(exercises.len(), 1);
        assert_eq!(exercises[0].goal, "Send \"retry\" first.");
        assert_eq!(exercises[0].hint, "Look at `SseResponse`.");
        assert_eq!(exercises[0].hint2, "First this,\nthen that.");
        let unknown = parse_exercises("[[exercise]]\nhint3 = \"x\"").unwrap_err();
        assert!(unknown.contains("unknown key `hint3`"), "{unknown}");
    }

    /// The hints as they were before issue 13 are code; naming things to look up is not.
    #[test]
    fn code_in_hints_is_found() {
        let code = [
            "`let mut response = ...; if let Some(delay) = self.config.retry { response = ... }`",
            "`hash ^= u32::from(byte); hash = hash.wrapping_mul(0x0100_0193);`. The hue is",
            "Normalise first: `name.trim().to_lowercase()`. Then hash the bytes with a hash whose",
            "Add the route next to `/send`: `(&Method::POST, \"/typing\") => self.typing(request)`.",
            "\"...\").await and return }`. And tell it whenever anything arrives: call",
            "`self.kept.iter().filter(|(id, _)| *id > seen).map(|(_, m)| m.clone()).collect()`.",
            "`let _open =",
        ];
        for line in code {
            assert!(code_in_hint(line).is_some(), "not seen as code: {line}");
        }
        let prose = [
            "The kit already parses the header for you: look in `realtime_kit::sse` for a function",
            "`Gauge::enter()` returns a guard; read the docs of `Heartbeat` and the `Beat` it yields.",
            "the `Subscribe` variant into {\"type\":\"subscribe\",...}. Once the variant exists,",
            "",
        ];
        for line in prose {
            assert_eq!(code_in_hint(line), None, "seen as code: {line}");
        }
    }

    /// The real info.toml: every exercise has both hints, and no hint line reads like code.
    #[test]
    fn every_exercise_has_two_hints_without_code() {
        for exercise in load_exercises().expect("info.toml parses") {
            assert!(
                !exercise.hint.trim().is_empty() && !exercise.hint2.trim().is_empty(),
                "`{}` needs both `hint` and `hint2` in info.toml",
                exercise.name
            );
            assert_eq!(code_lines_in_hints(&exercise), Vec::<String>::new());
        }
    }

    /// `[[test]]` entries are read with their name, path and feature; other tables are skipped.
    #[test]
    fn test_targets_are_read_from_the_manifest() {
        let manifest = r#"
[package]
name = "exercises"

[[test]]
name = "clock_retry"
path = "tests/clock_retry.rs"
required-features = ["check"]

[[test]]
# name = "commented_out"
name = "loose"
path = "tests/loose.rs"

[lints]
name = "not a test"
"#;
        let loose = TestTarget {
            name: "loose".into(),
            path: "tests/loose.rs".into(),
            needs_check: false,
        };
        let retry = TestTarget {
            name: "clock_retry".into(),
            path: "tests/clock_retry.rs".into(),
            needs_check: true,
        };
        assert_eq!(test_targets(manifest), [retry, loose]);
    }

    /// The real files agree: every exercise of info.toml has its `[[test]]`, needing `check`.
    #[test]
    fn every_exercise_has_its_test_target() {
        let exercises = load_exercises().expect("info.toml parses");
        let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).expect("read");
        let targets = test_targets(&manifest);
        for Exercise { name, .. } in &exercises {
            assert!(
                declares_test(&targets, name),
                "add a [[test]] for `{name}` to crates/exercises/Cargo.toml, with \
                 required-features = [\"check\"]"
            );
        }
    }
}
