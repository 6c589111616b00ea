//! The book in `book/` and its translations: building every edition side by side, extracting
//! the English messages, and keeping each gettext catalogue (`book/po/<lang>.po`) in step.
//!
//! ```text
//! cargo run -p read-book                     # English and Chinese, prints the English page
//! cargo run -p read-book -- --lang zh-CN     # the same build, prints the Chinese page
//! cargo run -p read-book -- update-po        # re-extract the English, merge into book/po/zh-CN.po
//! ```
//!
//! This is the workflow of Comprehensive Rust (mdbook-i18n-helpers), run in process: the
//! English chapters are the source; each translated message lives in the catalogue keyed by its
//! English text, so an English edit leaves the old translation unmatched, and `tests/book.rs`
//! turns that into a red test. Code is never translated: messages inside fenced code blocks
//! (comments and strings that mdbook-i18n-helpers would offer) are left out of the catalogue,
//! so each listing is included from the crates in every edition exactly as in English.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use mdbook_driver::MDBook;
use mdbook_driver::book::BookItem;
use polib::catalog::Catalog;
use polib::message::{Message, MessageFlags};
use polib::metadata::CatalogMetadata;

/// Errors are reported to a person, never matched on.
pub type Error = Box<dyn std::error::Error>;

/// A translated edition: its language code (the catalogue's name and the output folder) and how
/// the other edition's pages name it in their language link.
#[derive(Debug, Clone, Copy)]
pub struct Edition {
    /// BCP 47 code, as in `book.language` and `po/<code>.po`.
    pub code: &'static str,
    /// The link text the English pages show, in the edition's own language.
    pub link_from_english: &'static str,
    /// The link text this edition's pages show for the English page, in this edition's language.
    pub link_to_english: &'static str,
}

/// Every translation of the book. Each one is built into `<build-dir>/<code>/`.
pub const EDITIONS: &[Edition] = &[Edition {
    code: "zh-CN",
    link_from_english: "阅读中文版",
    link_to_english: "Read this page in English",
}];

/// The edition with language `code`, if the book has one.
pub fn edition(code: &str) -> Option<Edition> {
    EDITIONS.iter().copied().find(|e| e.code == code)
}

/// The book's root (the directory holding `book.toml`), found from this crate's directory so
/// the commands work from anywhere in the checkout.
pub fn book_root() -> Result<PathBuf, Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../book");
    root.canonicalize()
        .map_err(|error| format!("no book at {}: {error}", root.display()).into())
}

/// Where the catalogue of `code` lives.
pub fn catalogue_path(root: &Path, code: &str) -> PathBuf {
    root.join("po").join(format!("{code}.po"))
}

/// One message of the English book: its text, and every place it comes from (`file:line`).
#[derive(Debug, Clone)]
pub struct SourceMessage {
    /// The English Markdown, as mdbook-i18n-helpers groups it (a paragraph, a heading, a cell).
    pub msgid: String,
    /// `book.toml`, `src/SUMMARY.md` or `src/<chapter>.md:<line>`, space-separated.
    pub sources: Vec<String>,
}

/// The lines of `text` (1-based) that belong to a fenced code block, fences included: a block
/// without a known language is one message numbered at its opening fence.
fn lines_in_code(text: &str) -> HashSet<usize> {
    let mut inside: Option<&str> = None;
    let mut lines = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = ["```", "~~~"].into_iter().find(|f| trimmed.starts_with(f));
        match (inside, fence) {
            (None, Some(fence)) => inside = Some(fence),
            (Some(open), Some(fence)) if open == fence && trimmed.trim_end() == fence => {
                inside = None
            }
            (Some(_), _) => {}
            (None, None) => continue,
        }
        lines.insert(index + 1);
    }
    lines
}

/// Every message of the English book, in reading order: the title, the chapter names of
/// `SUMMARY.md`, then each chapter's prose, headings, tables and notes. Code is left out.
pub fn english_messages(root: &Path) -> Result<Vec<SourceMessage>, Error> {
    let book = MDBook::load(root).map_err(|e| format!("cannot load the book: {e:#}"))?;
    let mut found: Vec<SourceMessage> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |msgid: &str, source: String| {
        let msgid = msgid.trim();
        if msgid.is_empty() {
            return;
        }
        match index.get(msgid) {
            Some(&at) => found[at].sources.push(source),
            None => {
                index.insert(msgid.to_owned(), found.len());
                found.push(SourceMessage {
                    msgid: msgid.to_owned(),
                    sources: vec![source],
                });
            }
        }
    };
    if let Some(title) = &book.config.book.title {
        add(title, "book.toml".to_owned());
    }
    let src = Path::new("src");
    let mut chapters = Vec::new();
    for item in book.iter() {
        if let BookItem::Chapter(chapter) = item {
            add(&chapter.name, src.join("SUMMARY.md").display().to_string());
            if let Some(path) = &chapter.source_path {
                chapters.push((path.clone(), chapter.content.clone()));
            }
        }
    }
    for (path, content) in chapters {
        let code = lines_in_code(&content);
        let messages = mdbook_i18n_helpers::extract_messages(&content)
            .map_err(|e| format!("cannot read the messages of {}: {e}", path.display()))?;
        for (line, message) in messages {
            if !code.contains(&line) {
                add(
                    &message.message,
                    format!("{}:{line}", src.join(&path).display()),
                );
            }
        }
        for (line, summary) in summaries(&content) {
            if !code.contains(&line) {
                add(summary, format!("{}:{line}", src.join(&path).display()));
            }
        }
    }
    Ok(found)
}

/// The text of each one-line `<summary>...</summary>` (the title of a collapsed `<details>`
/// block, such as "For instructors"), with its line. mdbook-i18n-helpers skips HTML blocks, so
/// these are extracted and translated here.
fn summaries(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let inner = line
                .trim()
                .strip_prefix("<summary>")?
                .strip_suffix("</summary>")?;
            Some((index + 1, inner.trim()))
        })
        .collect()
}

/// Replaces the text of each `<summary>` line with its translation, if the catalogue has one.
fn translate_summaries(markdown: &str, catalogue: &Catalog) -> String {
    let mut translated = markdown.to_owned();
    for (_, summary) in summaries(markdown) {
        if let Some(message) = catalogue.find_message(None, summary, None)
            && message.is_translated()
            && !message.is_fuzzy()
            && let Ok(msgstr) = message.msgstr()
        {
            translated = translated.replace(
                &format!("<summary>{summary}</summary>"),
                &format!("<summary>{msgstr}</summary>"),
            );
        }
    }
    translated
}

/// Words of a message, for matching an edited message with its old translation.
fn words(text: &str) -> HashSet<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

/// How alike two word sets are, from 0 (nothing shared) to 1 (the same words).
fn likeness(a: &HashSet<&str>, b: &HashSet<&str>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    2.0 * a.intersection(b).count() as f64 / (a.len() + b.len()) as f64
}

/// What `update-po` did, for its closing line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Messages in the catalogue after the update.
    pub total: usize,
    /// Messages whose English is unchanged and whose translation was kept as it was.
    pub kept: usize,
    /// Edited messages, prefilled with the old translation of the most alike old message and
    /// marked fuzzy: a translator revises them, and the test fails until they do.
    pub fuzzy: usize,
    /// Messages with no translation yet.
    pub untranslated: usize,
    /// Old messages whose English is gone from the book (dropped; git keeps them).
    pub dropped: usize,
}

/// Re-extracts the English book and merges it into `po/<code>.po`: unchanged messages keep their
/// translation, edited ones get the closest old translation marked fuzzy, new ones stay empty,
/// and messages the English no longer has are dropped. Like `msgmerge`, without installing it.
pub fn update_catalogue(root: &Path, code: &str) -> Result<UpdateSummary, Error> {
    let path = catalogue_path(root, code);
    let old = if path.exists() {
        polib::po_file::parse(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    } else {
        Catalog::new(CatalogMetadata::new())
    };
    // Fresh header fields each time; the language and charset are what mdBook and gettext read.
    let mut metadata = CatalogMetadata::new();
    metadata.project_id_version = "realtime-push book".to_owned();
    metadata.language = code.to_owned();
    metadata.mime_version = "1.0".to_owned();
    metadata.content_type = "text/plain; charset=UTF-8".to_owned();
    metadata.content_transfer_encoding = "8bit".to_owned();
    let mut catalogue = Catalog::new(metadata);

    let english = english_messages(root)?;
    let current: HashSet<&str> = english.iter().map(|m| m.msgid.as_str()).collect();
    // Translations whose English is gone: candidates for an edited message.
    let orphans: Vec<(HashSet<&str>, &str)> = old
        .messages()
        .filter(|m| !current.contains(m.msgid()) && m.is_translated())
        .filter_map(|m| Some((words(m.msgid()), m.msgstr().ok()?)))
        .collect();
    let mut summary = UpdateSummary {
        dropped: old
            .messages()
            .filter(|m| !current.contains(m.msgid()))
            .count(),
        ..UpdateSummary::default()
    };
    for message in &english {
        let mut flags = MessageFlags::new();
        let previous = old.find_message(None, &message.msgid, None);
        let msgstr = match previous {
            Some(previous) if previous.is_translated() => {
                if previous.is_fuzzy() {
                    flags.add_flag("fuzzy");
                    summary.fuzzy += 1;
                } else {
                    summary.kept += 1;
                }
                previous.msgstr().unwrap_or_default().to_owned()
            }
            _ => {
                let mine = words(&message.msgid);
                let closest = orphans
                    .iter()
                    .map(|(theirs, msgstr)| (likeness(&mine, theirs), *msgstr))
                    .filter(|(score, _)| *score >= 0.5)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                match closest {
                    Some((_, msgstr)) => {
                        flags.add_flag("fuzzy");
                        summary.fuzzy += 1;
                        msgstr.to_owned()
                    }
                    None => {
                        summary.untranslated += 1;
                        String::new()
                    }
                }
            }
        };
        catalogue.append_or_update(
            Message::build_singular()
                .with_source(files_of(&message.sources))
                .with_flags(flags)
                .with_msgid(message.msgid.clone())
                .with_msgstr(msgstr)
                .done(),
        );
    }
    summary.total = english.len();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    polib::po_file::write(&catalogue, &path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(summary)
}

/// The files a message comes from, without line numbers: every English edit moves the lines below
/// it, and the catalogue should change only where a message did, so two branches that update it
/// conflict only where they translate the same text. The test still names `chapter.md:line`.
fn files_of(sources: &[String]) -> String {
    let mut files: Vec<&str> = Vec::new();
    for source in sources {
        let file = source
            .split_once(':')
            .map_or(source.as_str(), |(file, _)| file);
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files.join(" ")
}

/// Everything that keeps the catalogue of `code` from matching the English book: a message
/// missing, empty or fuzzy, or one whose English is gone. Each line names where it comes from.
pub fn catalogue_problems(root: &Path, code: &str) -> Result<Vec<String>, Error> {
    let path = catalogue_path(root, code);
    let catalogue =
        polib::po_file::parse(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let english = english_messages(root)?;
    let mut problems = Vec::new();
    for message in &english {
        let place = &message.sources[0];
        let excerpt: String = message.msgid.chars().take(70).collect();
        match catalogue.find_message(None, &message.msgid, None) {
            None => problems.push(format!("{place}: missing from the catalogue: {excerpt:?}")),
            Some(m) if !m.is_translated() => {
                problems.push(format!("{place}: not translated: {excerpt:?}"))
            }
            Some(m) if m.is_fuzzy() => {
                problems.push(format!("{place}: fuzzy (the English changed): {excerpt:?}"))
            }
            Some(_) => {}
        }
    }
    let current: HashSet<&str> = english.iter().map(|m| m.msgid.as_str()).collect();
    for message in catalogue.messages() {
        if !current.contains(message.msgid()) {
            let excerpt: String = message.msgid().chars().take(70).collect();
            problems.push(format!(
                "{}: no longer in the English book: {excerpt:?}",
                message.source()
            ));
        }
    }
    Ok(problems)
}

/// One translated message of a catalogue: the English, its translation, and where it comes from.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The English Markdown.
    pub msgid: String,
    /// Its translation; empty when not translated yet.
    pub msgstr: String,
    /// The first file it comes from (the catalogue keeps no line numbers).
    pub source: String,
}

/// Every message of `po/<code>.po` that is translated and not fuzzy, for checks on the wording.
pub fn translations(root: &Path, code: &str) -> Result<Vec<Translation>, Error> {
    let path = catalogue_path(root, code);
    let catalogue =
        polib::po_file::parse(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(catalogue
        .messages()
        .filter(|m| m.is_translated() && !m.is_fuzzy())
        .map(|m| Translation {
            msgid: m.msgid().to_owned(),
            msgstr: m.msgstr().unwrap_or_default().to_owned(),
            source: m
                .source()
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned(),
        })
        .collect())
}

/// `../` once per folder between a chapter and the book's root.
fn up_to_root(chapter: &Path) -> String {
    "../".repeat(chapter.components().count().saturating_sub(1))
}

/// Puts a link to the same page of the other edition at the top of every chapter. It is added
/// after translation, so it is never a message of the catalogue.
fn add_language_links(book: &mut MDBook, link: impl Fn(&Path) -> String) {
    book.book.for_each_mut(|item| {
        if let BookItem::Chapter(chapter) = item
            && let Some(path) = &chapter.path
        {
            // An HTML block of its own, ended by a blank line, so the Markdown below is untouched.
            chapter.content = format!("{}\n\n{}", link(path), chapter.content);
        }
    });
}

/// The ids of the headings of an mdBook page, in order (`<h2 id="...">`).
pub fn heading_ids(html: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<h") {
        rest = &rest[at + 2..];
        let level = rest.as_bytes().first().copied().unwrap_or(0);
        if (b'1'..=b'6').contains(&level)
            && let Some(tag) = rest[1..].strip_prefix(" id=\"")
            && let Some(end) = tag.find('"')
        {
            ids.push(tag[..end].to_owned());
        }
    }
    ids
}

/// Gives each ATX heading of `markdown` (outside code) the next id of `ids` as an explicit
/// `{#id}`. mdBook derives an id from the heading's text, so a translated heading would get a
/// new one and every `#fragment` link to it would break; the English id keeps them working.
fn pin_heading_ids(markdown: &str, ids: &[String]) -> String {
    let code = lines_in_code(markdown);
    let mut ids = ids.iter();
    let mut pinned = String::with_capacity(markdown.len() + 32 * ids.len());
    for (index, line) in markdown.lines().enumerate() {
        pinned.push_str(line);
        let hashes = line.bytes().take_while(|&b| b == b'#').count();
        let is_heading = (1..=6).contains(&hashes) && line[hashes..].starts_with(' ');
        if is_heading
            && !code.contains(&(index + 1))
            && !line.trim_end().ends_with('}')
            && let Some(id) = ids.next()
        {
            pinned.push_str(&format!(" {{#{id}}}"));
        }
        pinned.push('\n');
    }
    pinned
}

/// The HTML of one language link.
fn language_link(href: String, lang: &str, text: &str) -> String {
    format!(
        "<p class=\"language-switch\"><a href=\"{href}\" hreflang=\"{lang}\" lang=\"{lang}\">{text}</a></p>"
    )
}

/// Builds the English book into `out` and every translation into `out/<code>/`, each page
/// linking to the same page of the other edition. The English goes first: mdBook empties its
/// output folder before it writes, which would delete a translation built earlier.
pub fn build_all(root: &Path, out: &Path) -> Result<(), Error> {
    let mut english = MDBook::load(root).map_err(|e| format!("cannot load the book: {e:#}"))?;
    english.config.build.build_dir = out.to_path_buf();
    add_language_links(&mut english, |path| {
        let edition = EDITIONS[0];
        let href = format!("{}{}/{}", up_to_root(path), edition.code, html_name(path));
        language_link(href, edition.code, edition.link_from_english)
    });
    english
        .build()
        .map_err(|e| format!("cannot build the English book: {e:#}"))?;
    for edition in EDITIONS {
        build_edition(root, *edition, out, &out.join(edition.code))?;
    }
    Ok(())
}

/// A chapter's page, as mdBook names it.
fn html_name(path: &Path) -> String {
    path.with_extension("html")
        .to_string_lossy()
        .replace('\\', "/")
}

/// Builds one translation into `out`: the English chapters, each message replaced by its
/// translation from `po/<code>.po` (mdbook-i18n-helpers' gettext step, before the includes are
/// expanded, so every listing comes from the crates as in English). An untranslated message
/// stays English; `tests/book.rs` is what refuses one. `english` is where the English book was
/// built: its heading ids are kept, so a link to `chapter.html#some-heading` works in both.
pub fn build_edition(
    root: &Path,
    edition: Edition,
    english: &Path,
    out: &Path,
) -> Result<(), Error> {
    let path = catalogue_path(root, edition.code);
    let mut catalogue =
        polib::po_file::parse(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut book = MDBook::load(root).map_err(|e| format!("cannot load the book: {e:#}"))?;
    book.config.book.language = Some(edition.code.to_owned());
    book.config.build.build_dir = out.to_path_buf();
    if let Some(title) = &book.config.book.title
        && let Some(message) = catalogue.find_message(None, title, None)
        && message.is_translated()
        && !message.is_fuzzy()
    {
        book.config.book.title = Some(message.msgstr()?.to_owned());
    }
    let mut unreadable = None;
    book.book.for_each_mut(|item| {
        if let BookItem::Chapter(chapter) = item
            && let Some(path) = &chapter.path
        {
            match fs::read_to_string(english.join(html_name(path))) {
                Ok(html) => {
                    let pinned = pin_heading_ids(&chapter.content, &heading_ids(&html));
                    chapter.content = translate_summaries(&pinned, &catalogue);
                }
                Err(e) => unreadable = Some(format!("the English {}: {e}", html_name(path))),
            }
        }
    });
    if let Some(problem) = unreadable {
        return Err(problem.into());
    }
    // The chapter names mdBook hands over are stripped of Markdown; this adds those forms.
    mdbook_i18n_helpers::gettext::add_stripped_summary_translations(&mut catalogue);
    mdbook_i18n_helpers::gettext::translate_book(&catalogue, &mut book.book)
        .map_err(|e| format!("cannot translate the book to {}: {e:#}", edition.code))?;
    add_language_links(&mut book, |path| {
        let href = format!("{}../{}", up_to_root(path), html_name(path));
        language_link(href, "en", edition.link_to_english)
    });
    book.build()
        .map_err(|e| format!("cannot build the {} book: {e:#}", edition.code).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fences and the lines between them are code; the prose around them is not.
    #[test]
    fn code_lines_are_fences_and_what_they_hold() {
        let text = "prose\n```rust,ignore\n// a comment\n```\nmore\n~~~\n```\n~~~\nend";
        let mut lines: Vec<_> = lines_in_code(text).into_iter().collect();
        lines.sort();
        assert_eq!(lines, vec![2, 3, 4, 6, 7, 8]);
    }

    /// A chapter in a folder links up to the root before it goes into the other edition.
    #[test]
    fn links_climb_out_of_folders() {
        assert_eq!(up_to_root(Path::new("clock-sse.md")), "");
        assert_eq!(up_to_root(Path::new("part/page.md")), "../");
    }

    /// Headings get the English page's ids in order; code that looks like a heading does not.
    #[test]
    fn headings_keep_their_english_ids() {
        let html = r##"<h1 id="clock-ticker"><a class="header" href="#clock-ticker">x</a></h1>
            <h2 id="step-1">y</h2>"##;
        let ids = heading_ids(html);
        assert_eq!(ids, ["clock-ticker", "step-1"]);
        let markdown = "# Clock\n\n```sh\n# a comment\n```\n\n## Step 1\ntext\n";
        assert_eq!(
            pin_heading_ids(markdown, &ids),
            "# Clock {#clock-ticker}\n\n```sh\n# a comment\n```\n\n## Step 1 {#step-1}\ntext\n"
        );
    }

    /// An edited message shares most words with its old version; an unrelated one does not.
    #[test]
    fn likeness_finds_an_edited_message() {
        let old = words("The clock ticks once a second over SSE.");
        let edited = words("The clock ticks twice a second over SSE.");
        let other = words("Backpressure is what a slow reader causes.");
        assert!(likeness(&old, &edited) > 0.8);
        assert!(likeness(&old, &other) < 0.3);
    }
}
