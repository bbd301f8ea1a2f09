//! The Rust example of the repository's `docs/rust.md` and of the crate's
//! own README (which crates.io shows) is the crate documentation's, which rustdoc
//! compiles: so the one users copy compiles too.

/// The first fenced block of `lang` in `text`, each line passed through
/// `line` (which strips a prefix, or drops the line).
fn block<'t>(text: &'t str, lang: &str, line: impl Fn(&'t str) -> Option<&'t str>) -> String {
    let lines: Vec<&str> = text.lines().filter_map(line).collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == format!("```{lang}"))
        .unwrap_or_else(|| panic!("no ```{lang} block"));
    let end = start
        + 1
        + lines[start + 1..]
            .iter()
            .position(|l| l.trim_end() == "```")
            .expect("the block ends");
    lines[start + 1..end].join("\n")
}

#[test]
fn the_rust_page_example_is_the_compiled_one() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/docs/rust.md")).unwrap();
    let lib = include_str!("../src/lib.rs");
    let in_readme = block(&readme, "rust", Some);
    let in_docs = block(lib, "no_run", |l| {
        l.strip_prefix("//! ")
            .or_else(|| (l == "//!").then_some(""))
    });
    assert_eq!(in_readme, in_docs);
    assert!(in_readme.contains("fn main()"));
}

#[test]
fn the_crate_readme_example_is_the_compiled_one() {
    // The page crates.io shows: its quickstart is the documentation's too.
    let readme = include_str!("../README.md");
    let lib = include_str!("../src/lib.rs");
    let in_readme = block(readme, "rust", Some);
    let in_docs = block(lib, "no_run", |l| {
        l.strip_prefix("//! ")
            .or_else(|| (l == "//!").then_some(""))
    });
    assert_eq!(in_readme, in_docs);
    assert!(readme.contains("timber-tracing = \""));
}
