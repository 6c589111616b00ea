//! Building the rungs, and finding them: `cargo build --message-format=json-render-diagnostics`
//! prints one JSON message a line, and each `compiler-artifact` message of an example or a
//! binary names the executable it made. Reading those, rather than guessing `target/debug/...`,
//! finds them wherever `CARGO_TARGET_DIR` or a config puts them, `.exe` included.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a built executable is, as cargo calls its target's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `examples/<name>.rs`: the steps.
    Example,
    /// A `[[bin]]` or `src/main.rs`: the finished demos.
    Bin,
}

/// Executables by package, kind and target name.
#[derive(Debug, Default)]
pub struct Artifacts(HashMap<(String, Kind, String), PathBuf>);

impl Artifacts {
    /// The executable of target `name` of kind `kind` in `package`.
    pub fn get(&self, package: &str, kind: Kind, name: &str) -> Option<&Path> {
        self.0
            .get(&(package.to_owned(), kind, name.to_owned()))
            .map(PathBuf::as_path)
    }

    /// Reads cargo's JSON messages, one a line; lines that are not artifacts are skipped.
    pub fn from_messages(messages: &str) -> Self {
        let mut found = HashMap::new();
        for line in messages.lines() {
            if let Some((key, path)) = artifact(line) {
                found.insert(key, path);
            }
        }
        Self(found)
    }
}

/// The `(package, kind, name)` and executable of one `compiler-artifact` message.
fn artifact(line: &str) -> Option<((String, Kind, String), PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let executable = message["executable"].as_str()?;
    let target = &message["target"];
    let kinds = target["kind"].as_array()?;
    let kind = if kinds.iter().any(|kind| kind == "example") {
        Kind::Example
    } else if kinds.iter().any(|kind| kind == "bin") {
        Kind::Bin
    } else {
        return None;
    };
    let name = target["name"].as_str()?.to_owned();
    let package = package_name(message["package_id"].as_str()?)?;
    Some(((package, kind, name), PathBuf::from(executable)))
}

/// The package name in a cargo package id: `path+file:///work/crates/clock-sse#0.1.0` (the
/// directory's name, when the fragment gives only the version), `...#clock-sse@0.1.0`, or the
/// form before cargo 1.77, `clock-sse 0.1.0 (path+file:///...)`.
fn package_name(id: &str) -> Option<String> {
    if let Some((url, fragment)) = id.split_once('#') {
        if let Some((name, _version)) = fragment.split_once('@') {
            return Some(name.to_owned());
        }
        return url.rsplit('/').next().map(str::to_owned);
    }
    id.split_whitespace().next().map(str::to_owned)
}

/// The workspace root: this crate is `crates/ladder` in it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/ladder sits two levels below the workspace root")
        .to_path_buf()
}

/// Builds the examples and binaries of `packages` (the compiler's messages go to the terminal,
/// as in any build) and returns what it built. The same cargo that runs this checker builds
/// them, so `cargo run -p ladder` and the rungs agree on the toolchain and the target dir.
pub fn build(packages: &[&str]) -> Result<Artifacts, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .arg("build")
        .arg("--quiet");
    for package in packages {
        command.args(["-p", package]);
    }
    command.args([
        "--examples",
        "--bins",
        "--message-format=json-render-diagnostics",
    ]);
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let output = command
        .output()
        .map_err(|error| format!("could not run cargo: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "the build failed ({}): the compiler's messages above say why",
            output.status
        ));
    }
    Ok(Artifacts::from_messages(&String::from_utf8_lossy(
        &output.stdout,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///work/wt/crates/clock-sse#0.1.0","manifest_path":"/work/wt/crates/clock-sse/Cargo.toml","target":{"kind":["example"],"crate_types":["bin"],"name":"step1_ticks","src_path":"/work/wt/crates/clock-sse/examples/step1_ticks.rs","edition":"2024","doc":false,"doctest":false,"test":false},"profile":{},"features":[],"filenames":["/t/debug/examples/step1_ticks"],"executable":"/t/debug/examples/step1_ticks","fresh":true}"#;

    #[test]
    fn examples_and_binaries_are_found_by_package_kind_and_name() {
        let bin = EXAMPLE
            .replace(r#"["example"]"#, r#"["bin"]"#)
            .replace("debug/examples/", "debug/")
            .replace("step1_ticks", "clock-sse");
        let lib = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/clock-sse#0.1.0","target":{"kind":["lib"],"name":"clock_sse"},"executable":null}"#;
        let messages = [
            EXAMPLE,
            &bin,
            lib,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        let artifacts = Artifacts::from_messages(&messages);
        assert_eq!(
            artifacts.get("clock-sse", Kind::Example, "step1_ticks"),
            Some(Path::new("/t/debug/examples/step1_ticks"))
        );
        assert_eq!(
            artifacts.get("clock-sse", Kind::Bin, "clock-sse"),
            Some(Path::new("/t/debug/clock-sse"))
        );
        assert_eq!(artifacts.get("clock-sse", Kind::Bin, "clock_sse"), None);
        assert_eq!(artifacts.0.len(), 2);
    }

    #[test]
    fn package_ids_old_and_new_give_the_name() {
        assert_eq!(
            package_name("path+file:///work/crates/clock-sse#0.1.0").as_deref(),
            Some("clock-sse")
        );
        assert_eq!(
            package_name("path+file:///work/crates/dir#clock-sse@0.1.0").as_deref(),
            Some("clock-sse")
        );
        assert_eq!(
            package_name("registry+https://github.com/rust-lang/crates.io-index#bytes@1.10.1")
                .as_deref(),
            Some("bytes")
        );
        assert_eq!(
            package_name("clock-sse 0.1.0 (path+file:///work/crates/clock-sse)").as_deref(),
            Some("clock-sse")
        );
    }
}
