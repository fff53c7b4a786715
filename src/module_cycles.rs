//! Guard: sibling modules never depend on each other in a circle. Siblings are the top-level
//! modules of `src/`, and the children of each module in [`NESTED`]. A dependency is any
//! `crate::…`, `super::…` or `self::…` path in production code; test code (inline
//! `mod tests`, `tests.rs`, `testing.rs`) may reach back into what it tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const NESTED: &[&str] = &["controller", "altostrat"];

/// Module name (`controller::error`) to the sibling modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module path of a file under `src/`: `controller/error.rs` is `[controller, error]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    path
}

fn source_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Identifiers, `::` and single punctuation characters of `code`, without comment lines.
fn tokens(code: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(c) = rest.chars().next() {
            let len = if c.is_alphanumeric() || c == '_' {
                rest.find(|c: char| !c.is_alphanumeric() && c != '_')
                    .unwrap_or(rest.len())
            } else if rest.starts_with("::") {
                2
            } else {
                c.len_utf8()
            };
            if !c.is_whitespace() {
                out.push(&rest[..len]);
            }
            rest = &rest[len..];
        }
    }
    out
}

/// The paths starting at `crate`, `super` or `self`, a `{…}` group giving one path per item
/// (as far as its first segment, which is all the graph needs).
fn paths<'a>(tokens: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    for (start, token) in tokens.iter().enumerate() {
        let after_path = start > 0 && matches!(tokens[start - 1], "::" | "$");
        if after_path || !matches!(*token, "crate" | "super" | "self") {
            continue;
        }
        let mut i = start + 1;
        while tokens.get(i) == Some(&"::") && tokens.get(i + 1).is_some_and(|t| t != &"{") {
            i += 2;
        }
        let prefix: Vec<&str> = tokens[start..i].iter().copied().filter(|t| *t != "::").collect();
        if tokens.get(i) != Some(&"::") || tokens.get(i + 1) != Some(&"{") {
            found.push(prefix);
            continue;
        }
        let mut depth = 0;
        for (j, t) in tokens.iter().enumerate().skip(i + 1) {
            match *t {
                "{" => depth += 1,
                "}" => depth -= 1,
                _ if depth == 1 && matches!(tokens[j - 1], "{" | ",") => {
                    found.push(prefix.iter().copied().chain([*t]).collect())
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
        }
    }
    found
}

/// The absolute module path `path` names from inside `module`.
fn resolve(module: &[String], path: &[&str]) -> Vec<String> {
    let mut out = if path[0] == "crate" {
        Vec::new()
    } else {
        module.to_vec()
    };
    for segment in path {
        match *segment {
            "crate" | "self" => {}
            "super" => {
                out.pop();
            }
            name => out.push(name.to_owned()),
        }
    }
    out
}

/// The sibling edge `from` → `to` stands for, if they part at the top level or under a
/// module in [`NESTED`], and `to` is a module.
fn sibling_edge(from: &[String], to: &[String], modules: &BTreeSet<Vec<String>>) -> Option<(String, String)> {
    let depth = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    let nested = depth == 1 && NESTED.contains(&from[0].as_str());
    if (depth != 0 && !nested) || from.len() <= depth || to.len() <= depth {
        return None;
    }
    modules
        .contains(&to[..=depth])
        .then(|| (from[..=depth].join("::"), to[..=depth].join("::")))
}

fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    source_files(src, &mut files);
    let files: Vec<(Vec<String>, String)> = files
        .iter()
        .map(|f| {
            (
                module_of(f.strip_prefix(src).unwrap()),
                std::fs::read_to_string(f).unwrap(),
            )
        })
        .filter(|(m, _)| {
            !m.iter()
                .any(|s| matches!(s.as_str(), "main" | "bin" | "tests" | "testing" | "module_cycles"))
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .flat_map(|(m, _)| (1..=m.len()).map(|n| m[..n].to_vec()))
        .collect();
    let mut graph = Graph::new();
    for (module, code) in &files {
        let code = code.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        for path in paths(&tokens(code)) {
            let target = resolve(module, &path);
            if let Some((from, to)) = sibling_edge(module, &target, &modules) {
                graph.entry(from).or_default().insert(to);
            }
        }
    }
    graph
}

/// A cycle of `graph`, as the modules along it with the first repeated at the end.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            return Some(stack[at..].iter().cloned().chain([node.to_owned()]).collect());
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        stack.push(node.to_owned());
        let cycle = graph
            .get(node)
            .into_iter()
            .flatten()
            .find_map(|next| visit(next, graph, stack, done));
        stack.pop();
        cycle
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn sibling_modules_have_no_cycles() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        graph.contains_key("controller::status"),
        "the graph is read: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_checker_reads_groups_and_relative_paths_and_finds_a_cycle() {
    let code = "use super::super::{plan, planned::X};\nuse crate::metrics::Metrics;\n// use crate::leader;";
    let module: Vec<String> = ["controller", "instance", "decide"].map(String::from).to_vec();
    let targets: Vec<Vec<String>> = paths(&tokens(code)).iter().map(|p| resolve(&module, p)).collect();
    let expected = [
        vec!["controller", "plan"],
        vec!["controller", "planned"],
        vec!["metrics", "Metrics"],
    ];
    assert_eq!(
        targets,
        expected.map(|p| p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    );
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "b")] {
        graph.entry(from.into()).or_default().insert(to.into());
    }
    assert_eq!(find_cycle(&graph), Some(vec!["b".into(), "c".into(), "b".into()]));
}
