//! Tests wait on (and check the absence of) log lines by their `what`
//! name, never by their sentence. A name the daemon no longer writes would
//! make a wait time out but an absence check pass for nothing: every name
//! a test matches must be one the source writes.

use std::collections::BTreeSet;
use std::path::Path;

/// Every `rust` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The quoted names after each `marker` in `text`.
fn names_after(text: &str, marker: &str) -> Vec<String> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = text[at + marker.len()..].trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

#[test]
fn every_log_name_a_test_matches_is_one_the_daemon_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let written: BTreeSet<String> = sources(&root.join("src"))
        .iter()
        .flat_map(|f| names_after(&std::fs::read_to_string(f).unwrap(), "what ="))
        .collect();
    assert!(written.len() > 20, "the source writes names: {written:?}");
    let mut unknown = Vec::new();
    for file in sources(&root.join("tests")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in names_after(&text, "[\"what\"] ==") {
            if !written.contains(&name) {
                unknown.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(unknown.is_empty(), "names no log line carries: {unknown:?}");
}
