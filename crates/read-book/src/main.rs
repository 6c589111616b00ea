//! Builds the book in `book/` to HTML and prints where to open it: one command, nothing to
//! install.
//!
//! ```text
//! cargo run -p read-book
//! ```
//!
//! The book goes to `target/book/` (the `build-dir` in `book/book.toml`), and the last lines
//! printed are the path of `index.html` and the same as a `file://` URL to paste into a browser.
//! mdBook's warnings and errors (`RUST_LOG` filters them) go to standard error.
//! `tests/book.rs` checks every include and builds the same book on each `cargo test`.

use std::path::Path;

use mdbook_driver::MDBook;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Found from this crate's own directory, so the command works from anywhere in the checkout.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../book");
    let root = root
        .canonicalize()
        .map_err(|error| format!("no book at {}: {error}", root.display()))?;
    let book = MDBook::load(&root).map_err(|error| format!("cannot load the book: {error:#}"))?;
    book.build()
        .map_err(|error| format!("cannot build the book: {error:#}"))?;

    let index = book.build_dir_for("html").join("index.html");
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
