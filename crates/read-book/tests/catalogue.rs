//! `update-po` on a small book of its own: what happens to the catalogue when the English changes,
//! which is what the lead does after merging an edited chapter.
//!
//! Run with `cargo test -p read-book --test catalogue`.

use std::fs;
use std::path::Path;

use read_book::{UpdateSummary, catalogue_problems, update_catalogue};

/// Writes a one-chapter book whose chapter is `chapter`.
fn write_book(root: &Path, chapter: &str) {
    fs::create_dir_all(root.join("src")).expect("create src");
    fs::write(root.join("book.toml"), "[book]\ntitle = \"Tiny book\"\n").expect("write book.toml");
    fs::write(
        root.join("src/SUMMARY.md"),
        "# Summary\n\n- [Tiny](tiny.md)\n",
    )
    .expect("summary");
    fs::write(root.join("src/tiny.md"), chapter).expect("write chapter");
}

/// Gives every message of the catalogue a translation, as a translator would.
fn translate_everything(root: &Path) {
    let path = root.join("po/zh-CN.po");
    let text = fs::read_to_string(&path).expect("read catalogue");
    // The first `msgstr ""` is the header's, continued by its fields on the lines below.
    let translated: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let header = text.lines().position(|l| l == "msgstr \"\"") == Some(index);
            if line == "msgstr \"\"" && !header {
                "msgstr \"译文\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect();
    fs::write(&path, translated.join("\n") + "\n").expect("write catalogue");
}

/// An unchanged message keeps its translation, an edited one gets the old translation marked
/// fuzzy, a new one is empty, a removed one is dropped; code is never a message; and the check
/// names the fuzzy and the empty ones until they are translated.
#[test]
fn an_english_edit_leaves_its_translation_fuzzy_and_new_text_empty() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    write_book(
        root,
        "# Tiny\n\nThe clock ticks once a second over SSE.\n\n\
         ```rust,ignore\n// a comment that is code, not prose\n```\n\n\
         A paragraph that will be removed.\n",
    );
    let first = update_catalogue(root, "zh-CN").expect("first update");
    assert_eq!(first.untranslated, 4, "{first:?}"); // the title, the chapter name, two paragraphs
    translate_everything(root);
    assert_eq!(
        catalogue_problems(root, "zh-CN").expect("check"),
        Vec::<String>::new()
    );

    write_book(
        root,
        "# Tiny\n\nThe clock ticks twice a second over SSE.\n\nA new paragraph about heartbeats.\n",
    );
    let second = update_catalogue(root, "zh-CN").expect("second update");
    assert_eq!(
        second,
        UpdateSummary {
            total: 4,
            kept: 2,
            fuzzy: 1,
            untranslated: 1,
            dropped: 2,
        }
    );
    let catalogue = fs::read_to_string(root.join("po/zh-CN.po")).expect("read catalogue");
    assert!(!catalogue.contains("a comment that is code"), "{catalogue}");
    assert!(
        catalogue.contains(
            "#, fuzzy\nmsgid \"The clock ticks twice a second over SSE.\"\nmsgstr \"译文\""
        ),
        "{catalogue}"
    );
    let problems = catalogue_problems(root, "zh-CN").expect("check");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("fuzzy") && problems[0].contains("tiny.md:3"),
        "{problems:?}"
    );
    assert!(problems[1].contains("not translated") && problems[1].contains("heartbeats"));
}
