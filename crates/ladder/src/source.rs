//! What the step files themselves must be, checked on their text: step 1 fits in 100
//! non-blank lines and leaves the kit out, every step opens with `//!`, and every
//! `// ANCHOR: name` the book includes has its `// ANCHOR_END: name`.

use std::path::PathBuf;

use crate::Ladder;
use crate::artifacts::workspace_root;

/// The most non-blank lines step 1 may have, its page included.
pub const STEP_ONE_MAX_LINES: usize = 100;

/// The file of step `step` of `ladder`.
pub fn step_file(ladder: &Ladder, step: &str) -> PathBuf {
    workspace_root()
        .join("crates")
        .join(ladder.demo)
        .join("examples")
        .join(format!("{step}.rs"))
}

/// Lines with anything but whitespace on them.
pub fn non_blank_lines(text: &str) -> usize {
    text.lines().filter(|line| !line.trim().is_empty()).count()
}

/// Checks step 1's text: at most [`STEP_ONE_MAX_LINES`] non-blank lines and no `realtime_kit`,
/// since it is the file a reader copies into a fresh hyper project. Returns its line count.
pub fn check_step_one(text: &str) -> Result<usize, String> {
    let lines = non_blank_lines(text);
    if lines > STEP_ONE_MAX_LINES {
        return Err(format!(
            "step 1 has {lines} non-blank lines, more than the {STEP_ONE_MAX_LINES} a reader can hold in mind"
        ));
    }
    if text.contains("realtime_kit") || text.contains("realtime-kit") {
        return Err(
            "step 1 uses realtime_kit: it must run on hyper, hyper-util and tokio alone, so a reader can copy it"
                .to_owned(),
        );
    }
    Ok(lines)
}

/// The anchors of a file, in the order they open, if every `ANCHOR: name` is closed by an
/// `ANCHOR_END: name` after it and no name is opened twice at once (anchors may nest).
pub fn anchors(text: &str) -> Result<Vec<String>, String> {
    let mut open: Vec<String> = Vec::new();
    let mut names = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_no = number + 1;
        if let Some(name) = marker(line, "ANCHOR_END:") {
            let Some(index) = open.iter().position(|open| open == name) else {
                return Err(format!(
                    "line {line_no}: ANCHOR_END: {name} closes no anchor"
                ));
            };
            open.remove(index);
        } else if let Some(name) = marker(line, "ANCHOR:") {
            if open.iter().any(|open| open == name) {
                return Err(format!("line {line_no}: anchor {name} is already open"));
            }
            open.push(name.to_owned());
            names.push(name.to_owned());
        }
    }
    match open.first() {
        Some(name) => Err(format!("anchor {name} is never closed")),
        None => Ok(names),
    }
}

/// The name after `// <tag>` on a line that is only that comment.
fn marker<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    let rest = line
        .trim()
        .strip_prefix("//")?
        .trim_start()
        .strip_prefix(tag)?;
    let name = rest.trim();
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_do_not_count() {
        assert_eq!(non_blank_lines("a\n\n  \n\tb\n"), 2);
        assert_eq!(non_blank_lines(""), 0);
    }

    #[test]
    fn step_one_over_the_limit_or_with_the_kit_is_refused() {
        let long = "x\n".repeat(STEP_ONE_MAX_LINES + 1);
        assert!(
            check_step_one(&long)
                .unwrap_err()
                .contains("101 non-blank lines")
        );
        assert_eq!(check_step_one(&"x\n\n".repeat(STEP_ONE_MAX_LINES)), Ok(100));
        assert!(
            check_step_one("use realtime_kit::sse;\n")
                .unwrap_err()
                .contains("realtime_kit")
        );
    }

    #[test]
    fn anchors_must_be_closed_and_may_nest() {
        let text = "// ANCHOR: a\nx\n    // ANCHOR: b\ny\n    // ANCHOR_END: b\n// ANCHOR_END: a\n";
        assert_eq!(anchors(text), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert!(
            anchors("// ANCHOR: a\n")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            anchors("// ANCHOR_END: a\n")
                .unwrap_err()
                .contains("closes no anchor")
        );
        assert!(
            anchors("// ANCHOR: a\n// ANCHOR: a\n")
                .unwrap_err()
                .contains("already open")
        );
        assert_eq!(
            anchors("let s = \"// ANCHOR: not a marker\";\n// ANCHOR:\n"),
            Ok(vec![])
        );
    }
}
