//! The core reads top to bottom (issue #18): the top-level modules of
//! `lock/src` and of `lock-macros/src` are layers, each using only the ones
//! before it (so there is no import cycle), and no source file there is over
//! 600 lines. A folder counts as one module.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// `lock/src`'s modules, bottom up (README "Layout").
const CORE: &[&str] = &[
    "error",
    "key",
    "metrics",
    "backend",
    "lease",
    "shared",
    "queue",
    "hold",
    "api",
    "macro_support",
];

/// `lock-macros/src`'s modules, bottom up.
const MACROS: &[&str] = &[
    "diagnostics",
    "values",
    "template",
    "attr",
    "shape",
    "expand",
];

/// The longest a source file may be.
const MAX_LINES: usize = 600;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap();
                let top = rel.components().next().unwrap().as_os_str();
                let top = top.to_string_lossy().trim_end_matches(".rs").to_owned();
                out.push((top, path));
            }
        }
    }
    out
}

/// The top-level modules a source file names as `crate::name` (outside
/// comments: doc links are not imports), including `crate::{a, b}` groups.
fn uses(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    names.push(ident(item.trim()));
                }
            } else {
                names.push(ident(rest));
            }
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Checks the layering of `src` against `order`; every problem found.
fn check(src: &Path, order: &[&str]) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut problems = Vec::new();
    for (module, path) in files(src) {
        let source = fs::read_to_string(&path).unwrap();
        let shown = path.strip_prefix(workspace()).unwrap_or(&path).display();
        let lines = source.lines().count();
        if lines > MAX_LINES {
            problems.push(format!("{shown}: {lines} lines (at most {MAX_LINES})"));
        }
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = rank.get(module.as_str()) else {
            problems.push(format!(
                "{shown}: module `{module}` is not in the layer list"
            ));
            continue;
        };
        for used in uses(&source) {
            match rank.get(used.as_str()) {
                Some(&other) if other > own => problems.push(format!(
                    "{shown}: `{module}` uses `{used}`, a layer above it"
                )),
                // Same module, a lower one, or a path that is not a module
                // of ours (e.g. a re-exported item at the crate root).
                _ => {}
            }
        }
    }
    problems
}

#[test]
fn the_core_is_layered() {
    let problems = check(&workspace().join("lock/src"), CORE);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_macro_crate_is_layered() {
    let problems = check(&workspace().join("lock-macros/src"), MACROS);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_use() {
    let source = "use crate::api::Lock;\nuse crate::{error::Result, hold::Hold};\n// crate::macro_support in a comment";
    assert_eq!(uses(source), ["api", "error", "hold"]);
}
