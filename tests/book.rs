//! The book in `book/` cannot drift from the code, nor its Chinese edition from the English: every
//! include names a file and an anchor that exist and yield code, the whole book builds with
//! mdbook-driver, every English message has a translation in `book/po/zh-CN.po`, and the Chinese
//! book builds beside the English one with every listing in place.
//!
//! Run with `cargo test --test book`.
//!
//! mdBook itself is lenient: a missing anchor renders an empty block, and a missing file is one
//! log line while the build still succeeds. So the first test reads the includes itself, and the
//! second builds the book and then looks at the HTML.

use std::fs;
use std::path::{Path, PathBuf};

use mdbook_driver::MDBook;

/// The book's root: the directory holding `book.toml`.
fn book_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("book")
}

/// Every `.md` file under `dir`, in a stable order.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// One `{{#include ...}}` or `{{#rustdoc_include ...}}` found in a chapter.
#[derive(Debug)]
struct Include {
    /// `chapter.md:line`, for messages.
    place: String,
    /// The included file, resolved against the chapter's directory (as mdBook does).
    file: PathBuf,
    /// What follows the path after `:`; `None` includes the whole file.
    anchor: Option<String>,
    /// The info string of the code fence around the include (`rust,ignore`), if inside one.
    fence: Option<String>,
}

/// Finds the includes of one chapter, with the code fence each one sits in.
fn includes_in(chapter: &Path) -> Vec<Include> {
    let text =
        fs::read_to_string(chapter).unwrap_or_else(|e| panic!("read {}: {e}", chapter.display()));
    let dir = chapter.parent().expect("a chapter is in a directory");
    let name = chapter.file_name().expect("file name").to_string_lossy();
    let mut fence: Option<String> = None;
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim().to_owned()),
                Some(_) => None,
            };
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("{{#") {
            let escaped = rest[..at].ends_with('\\');
            let after = &rest[at + 3..];
            let end = after.find("}}").unwrap_or(after.len());
            let directive = &after[..end];
            rest = &after[end..];
            let Some(argument) = directive
                .strip_prefix("include ")
                .or_else(|| directive.strip_prefix("rustdoc_include "))
            else {
                continue;
            };
            if escaped {
                continue;
            }
            let target = argument.split_whitespace().next().unwrap_or("");
            let (path, anchor) = match target.split_once(':') {
                Some((path, anchor)) => (path, Some(anchor.to_owned())),
                None => (target, None),
            };
            found.push(Include {
                place: format!("{name}:{}", index + 1),
                file: dir.join(path),
                anchor,
                fence: fence.clone(),
            });
        }
    }
    found
}

/// The anchor name that follows `marker` (`ANCHOR:` or `ANCHOR_END:`) on `line`, read the way
/// mdBook reads it (letters, digits, `_` and `-`).
fn anchor_on<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let after = line.split_once(marker)?.1.trim_start();
    let end = after
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(after.len());
    Some(&after[..end])
}

/// The lines mdBook would include for `anchor`: those between its `ANCHOR` and `ANCHOR_END`
/// lines, leaving out the marker lines of other anchors. `Err` says what is wrong.
fn anchored_text(text: &str, anchor: &str) -> Result<String, String> {
    let starts = text
        .lines()
        .filter(|line| anchor_on(line, "ANCHOR:") == Some(anchor))
        .count();
    let ends = text
        .lines()
        .filter(|line| anchor_on(line, "ANCHOR_END:") == Some(anchor))
        .count();
    if (starts, ends) != (1, 1) {
        return Err(format!(
            "anchor `{anchor}` needs exactly one `ANCHOR: {anchor}` and one `ANCHOR_END: {anchor}` \
             line; found {starts} and {ends}"
        ));
    }
    let mut inside = false;
    let mut kept = Vec::new();
    for line in text.lines() {
        if !inside {
            inside = anchor_on(line, "ANCHOR:") == Some(anchor);
        } else if anchor_on(line, "ANCHOR_END:") == Some(anchor) {
            return Ok(kept.join("\n"));
        } else if anchor_on(line, "ANCHOR:").is_none() && anchor_on(line, "ANCHOR_END:").is_none() {
            kept.push(line);
        }
    }
    Err(format!(
        "`ANCHOR_END: {anchor}` comes before `ANCHOR: {anchor}`"
    ))
}

/// What one include puts into the book, or why it cannot.
fn included_text(include: &Include) -> Result<String, String> {
    let text = fs::read_to_string(&include.file)
        .map_err(|e| format!("cannot read {}: {e}", include.file.display()))?;
    let included = match include.anchor.as_deref() {
        None => text,
        // Line numbers go stale the moment someone edits the file; anchors move with the code.
        Some(spec) if spec.is_empty() || spec.starts_with(|c: char| c.is_ascii_digit()) => {
            return Err(format!("`:{spec}` is a line range; use a named anchor"));
        }
        Some(anchor) => anchored_text(&text, anchor)?,
    };
    if included.trim().is_empty() {
        return Err("the included block is empty".to_owned());
    }
    let is_rust = include.file.extension().is_some_and(|ext| ext == "rs");
    if is_rust && include.fence.as_deref() != Some("rust,ignore") {
        // mdBook would try to compile or run a plain `rust` block without our crates.
        return Err(format!(
            "Rust code must sit in a ```rust,ignore fence, not {:?}",
            include.fence
        ));
    }
    Ok(included)
}

/// Every include in the book names an existing file and anchor, yields a non-empty block, and
/// Rust code sits in a ```rust,ignore fence: what mdBook would only log, or render as empty.
#[test]
fn every_include_resolves_to_code() {
    let chapters = markdown_files(&book_root().join("src"));
    assert!(!chapters.is_empty(), "no chapters found in book/src");
    let mut problems = Vec::new();
    let mut checked = 0;
    for chapter in &chapters {
        for include in includes_in(chapter) {
            checked += 1;
            if let Err(problem) = included_text(&include) {
                problems.push(format!(
                    "{} includes {}{}: {problem}",
                    include.place,
                    include.file.display(),
                    include.anchor.map(|a| format!(":{a}")).unwrap_or_default()
                ));
            }
        }
    }
    assert!(checked > 0, "the book includes no code at all");
    assert!(
        problems.is_empty(),
        "broken includes:\n{}",
        problems.join("\n")
    );
}

/// Every image a chapter shows (`![alt](path)`) is a file in the book, so no page shows a broken
/// picture.
#[test]
fn every_image_exists() {
    let mut missing = Vec::new();
    for chapter in markdown_files(&book_root().join("src")) {
        let text = fs::read_to_string(&chapter).expect("read chapter");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("![") {
            rest = &rest[at + 2..];
            // The alt text ends at the first `]`; `#![attr]` in prose is no image.
            let Some(close) = rest.find(']') else { break };
            let Some(target) = rest[close..].strip_prefix("](") else {
                continue;
            };
            let path = &target[..target.find(')').unwrap_or(target.len())];
            let path = path.split_whitespace().next().unwrap_or("");
            let file = chapter.parent().expect("chapter directory").join(path);
            if !path.contains("://") && !file.is_file() {
                missing.push(format!("{}: {path}", chapter.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missing images:\n{}",
        missing.join("\n")
    );
}

/// Each demo chapter opens with its ladder's step 1: the chapter's first code block is the whole
/// of `crates/<demo>/examples/step1_*.rs`, so a reader has a working server on the first screen.
#[test]
fn every_demo_chapter_opens_with_its_step_one() {
    for demo in ["clock-sse", "chat-sse", "echo-ws", "stock-ticker"] {
        let chapter = book_root().join("src").join(format!("{demo}.md"));
        let text = fs::read_to_string(&chapter).expect("read chapter");
        let first_block = text
            .split("```")
            .nth(1)
            .unwrap_or_else(|| panic!("{demo}.md has no code block"));
        let prefix = format!("{{{{#include ../../crates/{demo}/examples/step1_");
        assert!(
            first_block.contains(&prefix) && !first_block.contains(".rs:"),
            "{demo}.md's first code block is not its step 1, whole: {first_block:?}"
        );
    }
}

/// The checker itself catches a missing file, a missing anchor, an empty block and a wrong
/// fence, so a green run of the test above means something.
#[test]
fn include_checker_rejects_broken_includes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let code = dir.path().join("code.rs");
    fs::write(
        &code,
        "// ANCHOR: full\nfn main() {}\n// ANCHOR_END: full\n// ANCHOR: empty\n\n// ANCHOR_END: empty\n// ANCHOR: open\n",
    )
    .expect("write code.rs");
    let chapter = dir.path().join("chapter.md");
    fs::write(
        &chapter,
        "```rust,ignore\n{{#include code.rs:full}}\n```\n\
         ```rust,ignore\n{{#include missing.rs:full}}\n```\n\
         ```rust,ignore\n{{#include code.rs:nowhere}}\n```\n\
         ```rust,ignore\n{{#include code.rs:empty}}\n```\n\
         ```rust,ignore\n{{#include code.rs:open}}\n```\n\
         ```rust\n{{#rustdoc_include code.rs:full}}\n```\n\
         ```rust,ignore\n{{#include code.rs:2:3}}\n```\n\
         \\{{#include missing.rs}} is escaped, not an include\n",
    )
    .expect("write chapter.md");
    let results: Vec<_> = includes_in(&chapter).iter().map(included_text).collect();
    assert_eq!(results.len(), 7, "{results:?}");
    assert_eq!(results[0].as_deref(), Ok("fn main() {}"));
    let expected = [
        "cannot read",
        "found 0 and 0",
        "empty",
        "found 1 and 0",
        "rust,ignore",
        "line range",
    ];
    for (result, expected) in results[1..].iter().zip(expected) {
        let error = result.as_ref().expect_err("must be rejected");
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }
}

/// A piece of `code` that its rendered page must contain verbatim: the longest line with nothing
/// HTML would escape, or else the longest identifier.
fn fingerprint(code: &str) -> &str {
    let plain_line = code
        .lines()
        .map(str::trim)
        .filter(|line| !line.contains(['&', '<', '>', '"', '\'']))
        .max_by_key(|line| line.len());
    let identifier = || {
        code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .max_by_key(|word| word.len())
            .unwrap_or_default()
    };
    let found = plain_line
        .filter(|line| line.len() >= 8)
        .unwrap_or_else(identifier);
    assert!(!found.is_empty(), "no fingerprint in {code:?}");
    found
}

/// Checks one built page: it exists, no include was left unexpanded, and it shows the code each
/// include of `chapter` yields. `Err` says what is wrong.
fn check_page(chapter: &Path, page: &Path) -> Result<String, String> {
    let html = fs::read_to_string(page)
        .map_err(|e| format!("{} was not rendered: {e}", page.display()))?;
    // mdBook leaves an include it could not resolve in the page as raw text.
    if html.contains("{{#include") || html.contains("{{#rustdoc_include") {
        return Err(format!("{} shows an unexpanded include", page.display()));
    }
    for include in includes_in(chapter) {
        let Ok(text) = included_text(&include) else {
            continue; // reported by `every_include_resolves_to_code`
        };
        let fingerprint = fingerprint(&text);
        if !html.contains(fingerprint) {
            return Err(format!(
                "{} lacks code from {} ({fingerprint:?})",
                page.display(),
                include.place
            ));
        }
    }
    Ok(html)
}

/// Each chapter of the book, as its path under `src/` (SUMMARY.md left out).
fn chapters() -> Vec<(PathBuf, PathBuf)> {
    let source = book_root().join("src");
    markdown_files(&source)
        .into_iter()
        .filter_map(|chapter| {
            let relative = chapter
                .strip_prefix(&source)
                .expect("chapter under src")
                .to_owned();
            (relative != Path::new("SUMMARY.md")).then_some((chapter, relative))
        })
        .collect()
}

/// The whole book builds with mdbook-driver, every chapter's page exists, and each page shows
/// the code its chapter includes (so the includes were expanded, not left as text).
#[test]
fn book_builds_with_included_code() {
    let out = tempfile::tempdir().expect("temporary directory");
    let mut book = MDBook::load(book_root()).unwrap_or_else(|e| panic!("load the book: {e:#}"));
    book.config.build.build_dir = out.path().to_path_buf();
    book.build()
        .unwrap_or_else(|e| panic!("build the book: {e:#}"));

    assert!(out.path().join("index.html").is_file(), "no index.html");
    for (chapter, relative) in chapters() {
        let page = out.path().join(relative.with_extension("html"));
        if let Err(problem) = check_page(&chapter, &page) {
            panic!("{problem}");
        }
    }
}

/// Every message of the English book has a translation in `book/po/zh-CN.po` that is neither
/// empty nor fuzzy, and the catalogue holds no message the English has dropped: an English edit
/// without its translation fails here, with the place of each message.
#[test]
fn zh_cn_catalogue_translates_every_message() {
    let problems = read_book::catalogue_problems(&book_root(), "zh-CN")
        .unwrap_or_else(|e| panic!("read the catalogue: {e}"));
    assert!(
        problems.is_empty(),
        "book/po/zh-CN.po is out of step with the English book ({} problems). Run \
         `cargo run -p read-book -- update-po`, translate the empty and fuzzy messages (and \
         remove their `#, fuzzy` line), then run this test again:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Both editions build side by side as `cargo run -p read-book` builds them: the Chinese book in
/// `zh-CN/` with `lang="zh-CN"`, every include resolved and every listing there as in English,
/// each page of each edition linking to the same page of the other, and every heading keeping
/// its English id so that links to a section work in both.
#[test]
fn every_edition_builds_and_links_to_the_other() {
    let out = tempfile::tempdir().expect("temporary directory");
    read_book::build_all(&book_root(), out.path()).unwrap_or_else(|e| panic!("build: {e}"));
    let mut problems = Vec::new();
    for (chapter, relative) in chapters() {
        let name = relative
            .with_extension("html")
            .to_string_lossy()
            .replace('\\', "/");
        let up = "../".repeat(relative.components().count() - 1);
        let english = out.path().join(&name);
        let chinese = out.path().join("zh-CN").join(&name);
        match check_page(&chapter, &english) {
            Ok(html) if !html.contains(&format!("href=\"{up}zh-CN/{name}\"")) => {
                problems.push(format!("{name} does not link to its Chinese page"))
            }
            Ok(_) => {}
            Err(problem) => problems.push(problem),
        }
        let english_ids = fs::read_to_string(&english)
            .map(|html| read_book::heading_ids(&html))
            .unwrap_or_default();
        match check_page(&chapter, &chinese) {
            Ok(html) => {
                // Translated headings keep the English ids, so `page.html#heading` links work.
                if read_book::heading_ids(&html) != english_ids {
                    problems.push(format!("zh-CN/{name} has other heading ids than {name}"));
                }
                if !html.contains("<html lang=\"zh-CN\"") {
                    problems.push(format!("zh-CN/{name} is not marked lang=\"zh-CN\""));
                }
                if !html.contains(&format!("href=\"{up}../{name}\"")) {
                    problems.push(format!("zh-CN/{name} does not link to its English page"));
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The terms of the glossary (`book/src/glossary.md`) that the Chinese edition must use every
/// time: the English term as it appears in a message, and the Chinese words that may stand for
/// it (the first is the glossary's). Terms with a common everyday sense ("step", "push") are
/// left out: only words that are jargon in every sentence they appear in.
const GLOSSARY: &[(&str, &[&str])] = &[
    ("heartbeat", &["心跳"]),
    ("backpressure", &["背压"]),
    ("fan-out", &["扇出"]),
    ("keep-alive comment", &["保活注释"]),
    ("graceful shutdown", &["优雅关闭"]),
    ("handshake", &["握手"]),
    ("snapshot", &["快照"]),
    ("conflat", &["合并为最新值", "合并"]),
    ("dns rebinding", &["DNS 重绑定"]),
    ("direct path", &["直写路径"]),
    ("reconnect", &["重连"]),
    ("event stream", &["事件流"]),
    ("broadcast", &["广播"]),
    ("polling", &["轮询"]),
    ("slow client", &["慢客户端"]),
    ("same-origin", &["同源"]),
    ("cross-origin", &["跨域"]),
    ("throughput", &["吞吐量"]),
];

/// Whether `term` occurs in `text` at the start of a word (so "reconnects" and "reconnection"
/// count, "installs" does not count for "stall"), ignoring case and code spans.
fn mentions(text: &str, term: &str) -> bool {
    let prose: String = text.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    let prose = prose.to_lowercase();
    prose.match_indices(term).any(|(at, _)| {
        !prose[..at]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
    })
}

/// The Chinese edition says each glossary term with the glossary's word (or keeps the English
/// term), so a reader meets one name for one idea from the first chapter to the last.
#[test]
fn zh_cn_translation_uses_the_glossary_terms() {
    let translations = read_book::translations(&book_root(), "zh-CN")
        .unwrap_or_else(|e| panic!("read the catalogue: {e}"));
    let mut problems = Vec::new();
    for message in &translations {
        for (english, chinese) in GLOSSARY {
            let kept = mentions(&message.msgstr, english);
            if mentions(&message.msgid, english)
                && !kept
                && !chinese.iter().any(|word| message.msgstr.contains(word))
            {
                problems.push(format!(
                    "{}: {english:?} is not {:?} in {:?}",
                    message.source, chinese[0], message.msgstr
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "translations that leave the glossary's terms:\n{}",
        problems.join("\n")
    );
}

/// The term matcher sees a term and its inflections, and skips code spans and words that only
/// end with the term.
#[test]
fn glossary_matcher_sees_whole_words_only() {
    assert!(mentions("A Heartbeat every 15 s", "heartbeat"));
    assert!(mentions("two event streams", "event stream"));
    assert!(mentions("without reconnection", "reconnect"));
    assert!(!mentions("it installs kosoku", "stall"));
    assert!(!mentions("see `broadcast::Receiver`", "broadcast"));
}
