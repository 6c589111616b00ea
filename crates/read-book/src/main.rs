//! Builds the book in `book/` to HTML, in English and in every translation, and prints where to
//! open it: one command, nothing to install.
//!
//! ```text
//! cargo run -p read-book                    # prints the English index.html
//! cargo run -p read-book -- --lang zh-CN    # the same build, prints the Chinese index.html
//! cargo run -p read-book -- update-po       # after an English edit: merge it into book/po/zh-CN.po
//! ```
//!
//! The English book goes to `target/book/` (the `build-dir` in `book/book.toml`), the Chinese one
//! beside it in `target/book/zh-CN/`, and every page links to the same page of the other. The last
//! lines printed are the path of the chosen `index.html` and the same as a `file://` URL.
//! mdBook's warnings and errors (`RUST_LOG` filters them) go to standard error.
//!
//! `update-po` re-extracts the English messages and merges them into each catalogue: unchanged
//! messages keep their translation, edited ones keep the old one marked fuzzy, new ones are empty.
//! `tests/book.rs` fails until every one is translated, and builds both editions.

use std::path::Path;

use mdbook_driver::MDBook;
use read_book::{EDITIONS, Error, book_root, catalogue_path, edition, update_catalogue};

const USAGE: &str = "usage: read-book [--lang CODE] | read-book update-po [--lang CODE]";

fn main() -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut args = std::env::args().skip(1);
    let mut update = false;
    let mut lang = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "update-po" => update = true,
            "--lang" => lang = Some(args.next().ok_or(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    let chosen = match lang.as_deref() {
        None | Some("en") => None,
        Some(code) => Some(edition(code).ok_or_else(|| {
            let known: Vec<_> = EDITIONS.iter().map(|e| e.code).collect();
            format!(
                "no {code} edition; the book has en and {}",
                known.join(", ")
            )
        })?),
    };
    let root = book_root()?;

    if update {
        let editions = chosen.map_or_else(|| EDITIONS.to_vec(), |e| vec![e]);
        for edition in editions {
            let summary = update_catalogue(&root, edition.code)?;
            println!(
                "{}: {} messages, {} kept, {} fuzzy (the English changed), {} untranslated, {} dropped",
                catalogue_path(&root, edition.code).display(),
                summary.total,
                summary.kept,
                summary.fuzzy,
                summary.untranslated,
                summary.dropped
            );
        }
        println!(
            "Translate the fuzzy and empty ones, then `cargo test --test book` says what is left."
        );
        return Ok(());
    }

    // The output folder is the one book.toml names, resolved as mdBook resolves it.
    let english =
        MDBook::load(&root).map_err(|error| format!("cannot load the book: {error:#}"))?;
    let out = english.build_dir_for("html");
    read_book::build_all(&root, &out)?;

    let index = match chosen {
        None => out.join("index.html"),
        Some(edition) => out.join(edition.code).join("index.html"),
    };
    let index = index.canonicalize().unwrap_or(index);
    println!("The book is built. Open it in a browser:");
    println!("  {}", index.display());
    println!("  {}", file_url(&index));
    Ok(())
}

/// `path` as a `file://` URL, with the characters that would end or break a URL escaped.
fn file_url(path: &Path) -> String {
    let path = path.to_string_lossy().replace('\\', "/");
    let mut url = String::from("file://");
    if !path.starts_with('/') {
        url.push('/'); // a Windows path such as C:/...
    }
    for c in path.chars() {
        match c {
            ' ' => url.push_str("%20"),
            '%' => url.push_str("%25"),
            '#' => url.push_str("%23"),
            '?' => url.push_str("%3F"),
            c => url.push(c),
        }
    }
    url
}
