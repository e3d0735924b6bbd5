//! The module graph, read from the sources: the top-level modules under
//! `src/` form no cycle, and the pure cores import no module that does I/O
//! (nor the session, the store, the actions or the monitor's shell).
//!
//! Every `crate::`, `self::` and `super::` path outside comments and string
//! literals counts, `use` trees and paths in code alike, test modules
//! included; each is resolved from the module of the file (and of the
//! inline `mod` it sits in). A name a glob import (`use super::*`) brings
//! in is not a path here: those imports stay within a module.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

/// The pure cores, by module path: logic with time passed in, no I/O.
/// They may import `config` (the vocabulary) and each other.
const CORES: &[&str] = &["device", "payload", "topic", "event", "template", "monitor::fleet", "cluster", "sparkplug"];

/// What no pure core imports: the modules that do I/O, and the monitor's
/// shell around the fleet core.
const NOT_FOR_CORES: &[&str] = &[
    "mqtt",
    "store",
    "actions",
    "http",
    "daemon",
    "history",
    "dead_letter",
    "systemd",
    "logging",
    "status",
    "monitor",
];

/// A source file: its path under `src/` and its module path.
struct Source {
    file: PathBuf,
    module: Vec<String>,
    text: String,
}

/// One path a file uses, resolved from the crate root.
struct Use {
    file: PathBuf,
    path: Vec<String>,
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let graph = graph(&uses(&sources()));
    let cycles = cycles(&graph);
    let shown: Vec<String> = cycles
        .iter()
        .map(|cycle| {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let u = &graph[&w[0]][&w[1]];
                    format!("  {} uses {} ({})", w[0], u.path.join("::"), u.file.display())
                })
                .collect();
            format!("{}\n{}", cycle.join(" -> "), steps.join("\n"))
        })
        .collect();
    assert!(shown.is_empty(), "the module graph has cycles:\n{}", shown.join("\n"));
}

#[test]
fn pure_cores_import_no_io_module() {
    let breaches: Vec<String> = uses(&sources())
        .iter()
        .filter_map(|u| {
            let module = module_of(&u.file);
            let core = CORES.iter().map(|c| segments(c)).find(|c| module.starts_with(c))?;
            let banned = NOT_FOR_CORES.iter().map(|b| segments(b)).find(|b| u.path.starts_with(b))?;
            (!u.path.starts_with(&core)).then(|| {
                format!(
                    "{} (core {}) uses {}: {} is not for cores",
                    u.file.display(),
                    core.join("::"),
                    u.path.join("::"),
                    banned.join("::")
                )
            })
        })
        .collect();
    assert!(breaches.is_empty(), "pure cores import I/O modules:\n{}", breaches.join("\n"));
}

#[test]
fn paths_are_read_as_rust_resolves_them() {
    let text = r##"
        use crate::{a::{self, b as c}, d::*};
        // crate::commented /* */
        /* crate::block /* nested */ crate::still_a_comment */
        const S: &str = "crate::quoted \" crate::escaped";
        const R: &str = r#"crate::raw "# ;
        fn f<'l>(x: &'l str) -> char {
            super::super::e::f();
            crate::g::h::<u8>(x);
            let _ = (b'x', br#"crate::bytes "#, '\'');
            '"'
        }
        mod inner {
            use super::i;
            use self::j::k;
        }
        fn m() { self::n(); }
    "##;
    let module = vec!["x".to_string(), "y".to_string()];
    let found: Vec<String> = references(&module, text).iter().map(|p| p.join("::")).collect();
    let want = ["a", "a::b", "d", "e::f", "g::h", "x::y::i", "x::y::inner::j::k", "x::y::n"];
    assert_eq!(found, want);
}

#[test]
fn a_cycle_is_found_and_named() {
    let edge = |to: &str| (to.to_string(), Use { file: PathBuf::from("f.rs"), path: vec![to.to_string()] });
    let mut graph: Graph = BTreeMap::new();
    graph.entry("a".into()).or_default().extend([edge("b")]);
    graph.entry("b".into()).or_default().extend([edge("c")]);
    graph.entry("c".into()).or_default().extend([edge("a"), edge("d")]);
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c", "a"]]);
    graph.get_mut("c").unwrap().remove("a");
    assert!(cycles(&graph).is_empty());
}

/// Every `.rs` file under `src/` but the crate roots.
fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.strip_prefix(&root).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter(|f| f != Path::new("lib.rs") && f != Path::new("main.rs"))
        .map(|file| Source { text: std::fs::read_to_string(root.join(&file)).unwrap(), module: module_of(&file), file })
        .collect()
}

/// `monitor/fleet/tests.rs` is `monitor::fleet::tests`, `store/mod.rs` is `store`.
fn module_of(file: &Path) -> Vec<String> {
    let mut module: Vec<String> = file.with_extension("").iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    module
}

fn segments(path: &str) -> Vec<String> {
    path.split("::").map(String::from).collect()
}

/// Every path each source uses into a module under `src/`.
fn uses(sources: &[Source]) -> Vec<Use> {
    let tops: Vec<&String> = sources.iter().map(|s| &s.module[0]).collect();
    sources
        .iter()
        .flat_map(|s| {
            references(&s.module, &s.text)
                .into_iter()
                .filter(|p| tops.contains(&&p[0]))
                .map(|path| Use { file: s.file.clone(), path })
        })
        .collect()
}

/// Top-level module → the modules it uses, each with one use that shows it.
type Graph = BTreeMap<String, BTreeMap<String, Use>>;

fn graph(uses: &[Use]) -> Graph {
    let mut graph: Graph = BTreeMap::new();
    for u in uses {
        let from = module_of(&u.file)[0].clone();
        if u.path[0] == from {
            continue;
        }
        let shown = Use { file: u.file.clone(), path: u.path.clone() };
        graph.entry(from).or_default().entry(u.path[0].clone()).or_insert(shown);
    }
    graph
}

/// One shortest cycle through each module that is on one, each named
/// from its first module (by name) back to it, each once.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        // Breadth first from `start`, until an edge leads back to it.
        let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        let mut last = None;
        while let Some(module) = queue.pop_front() {
            let nexts: Vec<&String> = graph.get(module).into_iter().flat_map(BTreeMap::keys).collect();
            if nexts.contains(&start) {
                last = Some(module);
                break;
            }
            for next in nexts {
                if !came_from.contains_key(next) {
                    came_from.insert(next, module);
                    queue.push_back(next);
                }
            }
        }
        let Some(mut module) = last else { continue };
        let mut cycle = vec![module.clone()];
        while module != start {
            module = came_from[module];
            cycle.push(module.clone());
        }
        cycle.reverse();
        let first = cycle.iter().enumerate().min_by_key(|(_, m)| *m).map_or(0, |(i, _)| i);
        cycle.rotate_left(first);
        cycle.push(cycle[0].clone());
        if !found.contains(&cycle) {
            found.push(cycle);
        }
    }
    found
}

/// The paths `text`, the source of `module`, uses, resolved from the
/// crate root; a `use` tree gives one path per leaf.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let tokens = tokens(&code_only(text));
    let mut inline: Vec<Option<String>> = Vec::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        let starts_path = matches!(token, "crate" | "self" | "super")
            && tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts_path {
            let here: Vec<String> = module.iter().cloned().chain(inline.iter().flatten().cloned()).collect();
            let (paths, end) = tree(&tokens, i);
            found.extend(paths.iter().filter_map(|p| resolve(&here, p)));
            i = end;
            continue;
        }
        match token {
            "{" => {
                let named = i >= 2 && tokens[i - 2] == "mod" && is_ident(&tokens[i - 1]);
                inline.push(named.then(|| tokens[i - 1].clone()));
            }
            "}" => {
                inline.pop();
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The leaves of the path (or `use` tree) at `tokens[i]`, and where it ends.
fn tree(tokens: &[String], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    while let Some(token) = tokens.get(i) {
        if token == "{" {
            let mut leaves = Vec::new();
            i += 1;
            while i < tokens.len() && tokens[i] != "}" {
                let (inner, end) = tree(tokens, i);
                leaves.extend(inner.into_iter().map(|leaf| [prefix.clone(), leaf].concat()));
                // Past the comma, or past whatever a `use` tree cannot hold.
                i = end.max(i + 1);
                if tokens.get(i).is_some_and(|t| t == ",") {
                    i += 1;
                }
            }
            return (leaves, i + 1);
        }
        if token == "*" {
            i += 1;
            break;
        }
        if !is_ident(token) {
            break;
        }
        prefix.push(token.clone());
        i += 1;
        if tokens.get(i).is_some_and(|t| t == "::") {
            i += 1;
        } else {
            if tokens.get(i).is_some_and(|t| t == "as") {
                i += 2;
            }
            break;
        }
    }
    (vec![prefix], i)
}

/// `path` from the crate root, seen from module `here`.
fn resolve(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut rest = path.iter().peekable();
    let mut resolved = match rest.next()?.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    while rest.next_if(|s| *s == "super").is_some() {
        resolved.pop()?;
    }
    resolved.extend(rest.filter(|s| *s != "self").cloned());
    (!resolved.is_empty()).then_some(resolved)
}

fn is_ident(token: &str) -> bool {
    token.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single characters of punctuation.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_string());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// `text` without its comments, string literals and character literals
/// (each string left as `""`).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut code = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(c) = at(i) {
        let word = |i: usize| i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        // `r"…"` and `br"…"`, not the end of a word such as `for`.
        let in_word = if i > 0 && chars[i - 1] == 'b' { word(i - 1) } else { word(i) };
        if c == '/' && at(i + 1) == Some('/') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            loop {
                match (at(i), at(i + 1)) {
                    (Some('/'), Some('*')) => (depth, i) = (depth + 1, i + 2),
                    (Some('*'), Some('/')) => (depth, i) = (depth - 1, i + 2),
                    (Some(_), _) => i += 1,
                    (None, _) => break,
                }
                if depth == 0 {
                    break;
                }
            }
            code.push(' ');
        } else if c == 'r' && !in_word && matches!(at(i + 1), Some('"' | '#')) {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            if at(i + 1 + hashes) != Some('"') {
                code.push(c);
                i += 1;
                continue;
            }
            i += hashes + 2;
            while at(i).is_some()
                && !(chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes)
            {
                i += 1;
            }
            i += hashes + 1;
            code.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while let Some(c) = at(i) {
                i += if c == '\\' { 2 } else { 1 };
                if c == '"' {
                    break;
                }
            }
            code.push_str("\"\"");
        } else if c == '\'' && at(i + 1) == Some('\\') {
            i += 3;
            while at(i).is_some_and(|c| c != '\'') {
                i += 1;
            }
            i += 1;
            code.push_str("' '");
        } else if c == '\'' && at(i + 2) == Some('\'') {
            i += 3;
            code.push_str("' '");
        } else {
            code.push(c);
            i += 1;
        }
    }
    code
}
