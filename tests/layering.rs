//! The floor plan holds: each folder imports only from itself and the layers below it
//! (`docs/DESIGN.md` has the map). The core never names a backend or a feature module, backends never
//! name consumers, aggregates or features, the core error type names only the vocabulary, and the
//! derive crate has no runtime dependency on `annals`.
//!
//! Every `crate::` path in a source file (tests and comments aside) is resolved to the module it
//! names, also through the crate root's flat re-exports (`crate::SledStore` is `store::sled`).

#![allow(missing_docs)]
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The crate's source files, relative to `src/`.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ reads") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &mut out);
    out.into_iter().map(|p| p.strip_prefix(&root).expect("under src").to_owned()).collect()
}

/// A file's code without its unit tests and comments.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file))
        .expect("a source file reads");
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The flat re-exports of the crate root: name -> the module path it comes from.
fn root_names() -> BTreeMap<String, String> {
    let lib = code(Path::new("lib.rs"));
    let mut names = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use crate::") else { continue };
        let rest: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
        let (module, items) = match rest.split_once("::{") {
            Some((module, items)) => (module.to_owned(), items.trim_end_matches('}').to_owned()),
            None => {
                let (module, item) = rest.rsplit_once("::").expect("a path");
                (module.to_owned(), item.to_owned())
            }
        };
        for item in items.split(',').filter(|i| !i.is_empty()) {
            names.insert(item.to_owned(), module.clone());
        }
    }
    names
}

/// The module paths a file's code names through `crate::`.
fn named_modules(file: &Path, names: &BTreeMap<String, String>) -> Vec<String> {
    let code = code(file);
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let mut segments = Vec::new();
        let mut path = rest;
        loop {
            let end = path.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(path.len());
            let segment = &path[..end];
            if segment.is_empty() {
                // `crate::{A, b::C}`: each item.
                if let Some(group) = path.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                        let first = item.split("::").next().unwrap_or(item).split_whitespace().next().unwrap_or("");
                        found.push(names.get(first).cloned().unwrap_or_else(|| first.to_owned()));
                    }
                }
                break;
            }
            if segment.starts_with(|c: char| c.is_uppercase()) {
                if segments.is_empty() {
                    segments.push(names.get(segment).cloned().unwrap_or_else(|| segment.to_owned()));
                }
                break;
            }
            segments.push(segment.to_owned());
            match path[end..].strip_prefix("::") {
                Some(next) => path = next,
                None => break,
            }
        }
        if !segments.is_empty() {
            found.push(segments.join("::"));
        }
    }
    found
}

fn names_any(module: &str, layers: &[&str]) -> bool {
    layers.iter().any(|layer| module == *layer || module.starts_with(&format!("{layer}::")))
}

/// The rules: which module paths each group of files may not name.
fn forbidden(file: &str) -> &'static [&'static str] {
    const FEATURES: [&str; 6] = ["import", "transfer", "testing", "sql_projection", "relay", "personal"];
    match file {
        "error.rs" => &[
            "store",
            "aggregate",
            "consumer",
            "import",
            "transfer",
            "testing",
            "sql_projection",
            "relay",
            "personal",
            "event",
            "envelope",
            "upcast",
        ],
        f if f.starts_with("store/sled/") => &[
            "consumer",
            "aggregate",
            "import",
            "transfer",
            "testing",
            "sql_projection",
            "relay",
            "personal",
            "store::memory",
            "store::postgres",
        ],
        f if f.starts_with("store/postgres/") => &[
            "consumer",
            "aggregate",
            "import",
            "transfer",
            "testing",
            "sql_projection",
            "relay",
            "personal",
            "store::memory",
            "store::sled",
        ],
        "store/memory.rs" => &[
            "consumer",
            "aggregate",
            "import",
            "transfer",
            "testing",
            "sql_projection",
            "relay",
            "personal",
            "store::sled",
            "store::postgres",
        ],
        f if f.starts_with("store/")
            || ["event.rs", "envelope.rs", "position.rs", "stream_id.rs", "name.rs", "upcast.rs"].contains(&f) =>
        {
            &[
                "store::sled",
                "store::memory",
                "store::postgres",
                "consumer",
                "aggregate",
                FEATURES[0],
                FEATURES[1],
                FEATURES[2],
                FEATURES[3],
                FEATURES[4],
                FEATURES[5],
            ]
        }
        f if f.starts_with("aggregate/") => &[
            "consumer",
            "import",
            "transfer",
            "sql_projection",
            "relay",
            "personal",
            "store::sled",
            "store::memory",
            "store::postgres",
        ],
        f if f.starts_with("consumer/") => &[
            "import",
            "transfer",
            "testing",
            "sql_projection",
            "relay",
            "personal",
            "store::sled",
            "store::memory",
            "store::postgres",
        ],
        // A connector works with any store: it names no backend and no other feature.
        f if f.starts_with("relay/") => &[
            "import",
            "transfer",
            "testing",
            "sql_projection",
            "personal",
            "store::sled",
            "store::memory",
            "store::postgres",
        ],
        // Personal data works with any store: it names no backend, no consumer and no other feature.
        f if f.starts_with("personal/") => &[
            "consumer",
            "aggregate",
            "import",
            "transfer",
            "testing",
            "sql_projection",
            "relay",
            "store::sled",
            "store::memory",
            "store::postgres",
        ],
        _ => &[],
    }
}

#[test]
fn every_file_imports_only_from_its_layer_and_below() {
    let names = root_names();
    assert!(names.get("SledStore").is_some_and(|m| m == "store::sled"), "the root re-exports resolve: {names:?}");
    let mut breaches = Vec::new();
    let files = sources();
    assert!(files.len() > 40, "the sources were found: {files:?}");
    for file in files {
        let shown = file.to_string_lossy().replace('\\', "/");
        for module in named_modules(&file, &names) {
            if names_any(&module, forbidden(&shown)) {
                breaches.push(format!("src/{shown} names crate::{module}"));
            }
        }
    }
    assert!(breaches.is_empty(), "layering broken:\n{}", breaches.join("\n"));
}

#[test]
fn the_derive_crate_has_no_runtime_dependency_on_annals() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("derive/Cargo.toml"))
        .expect("derive/Cargo.toml reads");
    let dependencies = manifest
        .split("\n[")
        .find(|section| section.starts_with("dependencies]"))
        .expect("derive/Cargo.toml has [dependencies]");
    assert!(
        !dependencies.lines().any(|line| line.trim_start().starts_with("annals")),
        "annals-derive depends on annals at run time:\n{dependencies}"
    );
}
