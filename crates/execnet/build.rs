//! Turns the README's Rust snippets into doc tests.
//!
//! The README shows snippets as a reader would write them: bare statements that use `?`,
//! and, after the first one, a gateway called `gw` (and `other` for a second one) made
//! earlier. This script copies every ```` ```rust ```` block of the README into
//! `$OUT_DIR/readme_snippets.md`, each wrapped in hidden lines that the README states in
//! words: a `fn main() -> execnet::Result<()>`, and `gw` / `other` as popen gateways when
//! the snippet uses them without making them. lib.rs includes that file as the doc of a
//! `#[cfg(doctest)]` item, so `cargo test --doc` compiles every snippet and runs those
//! not marked `no_run` (the fence reads ```` ```rust no_run ````, which GitHub still
//! highlights as Rust).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let readme = Path::new(&manifest).join("../../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    println!("cargo:rerun-if-changed=build.rs");
    // Outside the workspace (a packaged crate) there is no README: no snippets to test.
    let text = std::fs::read_to_string(&readme).unwrap_or_default();
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("readme_snippets.md");
    std::fs::write(out, snippets_as_doctests(&text)).expect("OUT_DIR is writable");
}

/// One doc-test block per README Rust block, headed by the README line it starts at.
fn snippets_as_doctests(readme: &str) -> String {
    let mut out = String::from("The README's Rust snippets, as doc tests.\n\n");
    let mut lines = readme.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```rust") else { continue };
        let attributes: Vec<&str> = info.split([' ', ',']).filter(|a| !a.is_empty()).collect();
        let body: Vec<&str> = lines.by_ref().map(|(_, l)| l).take_while(|l| l.trim_start() != "```").collect();
        let _ = writeln!(out, "README.md line {}:\n", number + 1);
        let _ = writeln!(out, "```rust{}", attributes.iter().map(|a| format!(",{a}")).collect::<String>());
        out.push_str("# #![allow(unused)]\n# fn main() -> execnet::Result<()> {\n");
        for name in ["gw", "other"] {
            if uses(&body, name) && !body.iter().any(|l| l.contains(&format!("let {name} "))) {
                let _ = writeln!(out, "# let {name} = execnet::makegateway(\"popen\")?;");
            }
        }
        for l in &body {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("# Ok(()) }\n```\n\n");
    }
    out
}

/// Whether a snippet names `name` as a whole word (`gw.` or `&gw`, not `gwx`).
fn uses(body: &[&str], name: &str) -> bool {
    body.iter().any(|line| {
        line.match_indices(name).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    })
}
