//! The house rules a reader relies on (docs/development.md, "Layout"), checked on
//! the source as text: no function in `src/` or the benchmark runner is longer
//! than [`MAX_FUNCTION_LINES`], and the modules of `src/` import one another
//! without a circle. The code is rustfmt-formatted, which these readings rely on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a function may be, from its `fn` line to its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

/// The Rust files below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each function of `text` longer than `max` lines: its name, first line and length.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = function_name(line) else {
            continue;
        };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let closing = format!("{indent}}}");
        let end = (start..lines.len()).find(|&i| lines[i] == closing);
        let length = end.map_or(lines.len() - start, |end| end - start + 1);
        if length > max {
            long.push((name.to_string(), start + 1, length));
        }
    }
    long
}

/// The name of the function a line starts, if it starts one.
fn function_name(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().peekable();
    while let Some(word) = words.next() {
        match word {
            "fn" => return words.next()?.split(['(', '<']).next(),
            "pub" | "pub(crate)" | "pub(super)" | "async" | "const" | "unsafe" => {}
            _ => return None,
        }
    }
    None
}

#[test]
fn no_function_in_src_or_the_benchmark_runner_is_longer_than_80_lines() {
    let mut files = rust_files(&root().join("src"));
    files.extend(rust_files(&root().join("examples/bench")));
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (name, line, length) in long_functions(&text, MAX_FUNCTION_LINES) {
            let file = file.strip_prefix(root()).unwrap_or(&file).display();
            found.push(format!("{file}:{line} {name}: {length} lines"));
        }
    }
    assert!(found.is_empty(), "split these:\n{}", found.join("\n"));
}

#[test]
fn a_long_function_is_measured_from_its_fn_line_to_its_closing_brace() {
    let body = "    let x = 1;\n".repeat(3);
    let text = format!("pub(crate) async fn f<T>(t: T) {{\n{body}}}\n\nfn g();\nfn h() {{}}\n");
    assert_eq!(long_functions(&text, 4), [("f".to_string(), 1, 5)]);
    assert!(long_functions(&text, 5).is_empty());
}

/// The module a file of `src/` is (`sink::delivery`), `None` for the binary's
/// files and test modules.
fn module_of(file: &Path) -> Option<String> {
    let src = root().join("src");
    let relative = file.strip_prefix(&src).ok()?.with_extension("");
    let mut parts: Vec<String> = (relative.iter())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.first().map(String::as_str) {
        Some("main" | "cli" | "lib") | None => None,
        _ if parts.last().is_some_and(|p| p == "tests") => None,
        _ => Some(parts.join("::")),
    }
}

/// The code of a file that the library builds: comments and the test module left out.
fn library_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    let lines = code.lines().filter(|l| !l.trim_start().starts_with("//"));
    lines.collect::<Vec<_>>().join("\n")
}

/// The module paths `code` (of module `module`) names: `crate::a::b` and `super::c`.
fn named_paths(module: &str, code: &str) -> Vec<String> {
    let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
    let mut paths = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_string())] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':');
            paths.push(match base.as_str() {
                "" => path.to_string(),
                base => format!("{base}::{path}"),
            });
        }
    }
    paths
}

/// Who imports whom: the modules of `src/`, each with the modules it names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(&root().join("src"));
    let modules: BTreeMap<String, PathBuf> = (files.iter())
        .filter_map(|f| Some((module_of(f)?, f.clone())))
        .collect();
    let known = |path: &str| {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| modules.contains_key(m))
    };
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let named = named_paths(module, &library_code(&text));
        let targets = named.iter().filter_map(|p| known(p));
        let targets = targets.filter(|t| t != module).collect();
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The arrows between the top-level modules, and between the children of each
/// module (a child naming its parent's items is not an arrow between children).
fn levels(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeMap<String, BTreeSet<String>>> {
    let parent = |m: &str| m.rsplit_once("::").map_or("", |(p, _)| p).to_string();
    let mut by_parent: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, targets) in graph {
        for to in targets {
            // The pair of ancestors of `from` and `to` that are siblings.
            let (a, b) = sibling_ancestors(from, to);
            if let (Some(a), Some(b)) = (a, b) {
                let level = by_parent.entry(parent(&a)).or_default();
                level.entry(a).or_default().insert(b);
            }
        }
    }
    by_parent.into_values().collect()
}

/// The ancestors (or selves) of `from` and `to` under their deepest common
/// ancestor; `None` when one contains the other.
fn sibling_ancestors(from: &str, to: &str) -> (Option<String>, Option<String>) {
    let (f, t): (Vec<&str>, Vec<&str>) = (from.split("::").collect(), to.split("::").collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common == f.len() || common == t.len() {
        return (None, None);
    }
    (Some(f[..=common].join("::")), Some(t[..=common].join("::")))
}

/// A circle in `arrows`, if there is one.
fn circle(arrows: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        arrows: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for next in arrows.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, arrows, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    let mut found = arrows
        .keys()
        .find_map(|start| visit(start, arrows, &mut Vec::new(), &mut done));
    if let Some(circle) = found.as_mut() {
        circle.push(circle[0].clone());
    }
    found
}

#[test]
fn the_modules_of_src_import_one_another_without_a_circle() {
    let graph = imports();
    assert!(graph.contains_key("sink::delivery") && graph["pipeline"].contains("records"));
    for level in levels(&graph) {
        if let Some(circle) = circle(&level) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn a_circle_through_siblings_is_found_and_a_child_naming_its_parent_is_not_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b::x"]),
        ("b", vec!["b::x"]),
        ("b::x", vec!["b", "c"]),
        ("c", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_string(), to.into_iter().map(String::from).collect()))
    .collect();
    let top = levels(&graph)
        .into_iter()
        .find(|l| l.contains_key("a"))
        .unwrap();
    assert_eq!(
        circle(&top),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let without: BTreeMap<_, _> = graph.into_iter().filter(|(m, _)| m != "c").collect();
    assert!(levels(&without).iter().all(|l| circle(l).is_none()));
}

#[test]
fn named_paths_resolve_crate_and_super_but_not_longer_words() {
    let code =
        "use crate::sink::delivery::KafkaSink;\nuse super::classify;\nmy_crate::x; supercrate::y";
    assert_eq!(
        named_paths("sink::recovery", code),
        ["sink::delivery::KafkaSink", "sink::classify"]
    );
}
