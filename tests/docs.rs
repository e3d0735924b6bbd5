//! The documentation and the shipped JSON schema kept in step with the
//! code: the schema knows every key the config file takes and accepts every
//! config willwatch ships or documents; every key it lists is in
//! docs/configuration.md; every metric src/metrics.rs registers is in the
//! metrics list of docs/operations.md.

#[path = "support/schema.rs"]
mod schema;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `willwatch check` on a file: whether it accepts it, and what it said.
fn check(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["check", "-c"])
        .arg(path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run willwatch check");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `*.toml` files under `dir`, at any depth.
fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn the_schema_accepts_every_shipped_config() {
    let mut files = vec![root().join("config/willwatch.toml"), root().join("packaging/willwatch.toml")];
    toml_files(&root().join("tests/data"), &mut files);
    for file in files {
        let (ok, stderr) = check(&file);
        assert!(ok, "{} is not valid: {stderr}", file.display());
        schema::assert_valid(&read(&file));
    }
}

/// Valid configs at the edges of what a schema can say, each one accepted
/// by `willwatch check` first.
#[test]
fn the_schema_accepts_what_check_accepts() {
    let broker = "[broker]\nurl = \"mqtt://127.0.0.1:1883\"\n";
    let configs = [
        // An endpoint behind a users file (a credential: `check` only warns outside the service).
        format!("{broker}[http]\nlisten = \"127.0.0.1:9818\"\nusers_file = \"credential:users\"\n"),
        // A device without a topic takes the preset of [defaults].
        format!("{broker}[defaults]\npreset = \"tasmota\"\n[[device]]\n"),
        // Durations with a fraction, spaces and several units.
        format!("{broker}[defaults]\ngrace = \"1.5s\"\nheartbeat_timeout = \"1h 30m\"\n[history]\nkeep = \"2days 12h\"\n"),
        // A URL scheme in capitals.
        "[broker]\nurl = \"MQTT://127.0.0.1:1883\"\n[action.hook]\ntype = \"webhook\"\nurl = \"HTTPS://hooks.example.com/w\"\n"
            .to_string(),
        // Every key of [[sparkplug]].
        format!(
            "{broker}[action.rebirth]\ntype = \"reconnect\"\n[[device]]\nid = \"uplink\"\ntopic = \"site/uplink/status\"\n\
             [[sparkplug]]\ngroup = \"plant1\"\nedge_nodes = [\"press-1\"]\ndevices = false\nactions = [\"log\", \"rebirth\"]\n\
             grace = \"24h\"\nseverity = \"warning\"\nparent = \"uplink\"\nmax_devices = 10\n"
        ),
        // Broker events chosen by `on`.
        format!(
            "{broker}actions = [\"pager\"]\n[action.pager]\ntype = \"log\"\non = [\"broker_down\", \"broker_up\"]\n"
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for text in configs {
        let path = dir.path().join("w.toml");
        std::fs::write(&path, &text).unwrap();
        let (ok, stderr) = check(&path);
        assert!(ok, "not a valid config:\n{text}\n{stderr}");
        let errors = schema::errors(&text);
        if !errors.is_empty() {
            refused.push(format!("{text}{errors:#?}"));
        }
    }
    assert!(refused.is_empty(), "the JSON schema refuses valid configs:\n{}", refused.join("\n\n"));
}

/// Every ```toml example in the README and docs/ passes the schema (with a
/// `[broker]` added to the examples that show only a part of a file).
#[test]
fn the_schema_accepts_every_example_in_the_documentation() {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut examples = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for block in text.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            let whole = if block.contains("[broker]") {
                block.to_string()
            } else {
                format!("{block}\n[broker]\nurl = \"mqtt://127.0.0.1:1883\"\n")
            };
            let errors = schema::errors(&whole);
            assert!(
                errors.is_empty(),
                "{}: the JSON schema refuses this example: {errors:#?}\n{block}",
                file.display()
            );
            examples += 1;
        }
    }
    assert!(examples >= 4, "only {examples} TOML examples found");
}

/// What the schema says a table (`""`: the top level) takes.
fn schema_table(table: &str) -> &'static serde_json::Map<String, Value> {
    let top = schema::schema();
    let value = if table.is_empty() { top } else { &top["properties"][table] };
    let object = if value["type"] == "array" {
        &value["items"]
    } else if value["additionalProperties"].is_object() {
        &value["additionalProperties"]
    } else {
        value
    };
    object["properties"].as_object().unwrap_or_else(|| panic!("the schema has no keys for `{table}`"))
}

/// The keys the schema lets a table (`action.TYPE`: an action of that
/// type) take.
fn schema_keys(table: &str) -> Vec<String> {
    let Some(kind) = table.strip_prefix("action.") else {
        return schema_table(table).keys().cloned().collect();
    };
    let action = &schema::schema()["properties"]["action"]["additionalProperties"];
    let rule = action["allOf"]
        .as_array()
        .expect("the schema's actions have rules by type")
        .iter()
        .find(|rule| {
            let of = &rule["if"]["properties"]["type"];
            of["const"] == kind || of["enum"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == kind))
        })
        .unwrap_or_else(|| panic!("the schema has no rule for actions of type `{kind}`"));
    let names = rule["then"]["propertyNames"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("the schema's rule for `{kind}` actions does not list their keys"));
    names.iter().map(|n| n.as_str().unwrap().to_string()).collect()
}

/// The keys each table takes, as the serde types that read the config
/// declare them (`willwatch::config::keys`), are the schema's, no more, no
/// fewer.
#[test]
fn the_schema_takes_exactly_the_keys_the_config_takes() {
    let mut wrong = Vec::new();
    for (table, keys) in willwatch::config::keys() {
        let known = schema_keys(&table);
        wrong.extend(keys.iter().filter(|k| !known.iter().any(|n| n == *k)).map(|k| format!("[{table}] {k}: refused")));
        wrong.extend(
            known
                .iter()
                .filter(|n| !keys.contains(&n.as_str()))
                .map(|n| format!("[{table}] {n}: unknown to willwatch")),
        );
    }
    assert!(wrong.is_empty(), "the JSON schema and the config differ: {wrong:?}");
}

/// The `## ` sections of a Markdown text: heading, and the text up to the
/// next one (its `###` subsections included).
fn sections(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let starts: Vec<usize> = text.match_indices("\n## ").map(|(i, _)| i + 1).collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(text.len());
        let body = &text[start..end];
        let heading = body.lines().next().unwrap();
        out.push((heading, body));
    }
    out
}

#[test]
fn every_key_of_the_schema_is_in_the_configuration_reference() {
    let reference = read("docs/configuration.md");
    let sections = sections(&reference);
    let section = |marker: &str| {
        sections.iter().find(|(heading, _)| heading.starts_with(&format!("## `{marker}`"))).map(|(_, body)| *body)
    };
    let mut missing = Vec::new();
    for (key, value) in schema_table("") {
        let marker = if value["type"] == "array" {
            format!("[[{key}]]")
        } else if value["additionalProperties"].is_object() {
            format!("[{key}.NAME]")
        } else if value["properties"].is_object() {
            format!("[{key}]")
        } else {
            key.clone()
        };
        let Some(body) = section(&marker) else {
            missing.push(format!("a section `{marker}`"));
            continue;
        };
        if marker == *key {
            continue;
        }
        let documented = documented_keys(body);
        for inner in schema_table(key).keys() {
            if !documented.contains(&inner.as_str()) {
                missing.push(format!("`{inner}` in a table of the `{marker}` section"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md lacks {missing:?}");
}

/// The keys the first column of a Markdown text's tables names.
fn documented_keys(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|line| line.strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .collect()
}

/// Each action type's keys are in its own subsection (`### type = "…"`),
/// or, for `type` and `on`, in the table every action shares.
#[test]
fn every_key_of_each_action_type_is_in_its_subsection() {
    let reference = read("docs/configuration.md");
    let (_, actions) = sections(&reference)
        .into_iter()
        .find(|(heading, _)| heading.starts_with("## `[action.NAME]`"))
        .expect("docs/configuration.md has an `[action.NAME]` section");
    let common = documented_keys(&actions[..actions.find("\n### ").unwrap_or(actions.len())]);
    let mut missing = Vec::new();
    for (table, keys) in willwatch::config::keys() {
        let Some(kind) = table.strip_prefix("action.") else { continue };
        // Its heading (`###` or `####`) names the type; the subsection runs
        // to the next heading.
        let named = format!("`type = \"{kind}\"`");
        let Some(start) = actions
            .match_indices("\n#")
            .map(|(i, _)| i + 1)
            .find(|&i| actions[i..].lines().next().unwrap().contains(&named))
        else {
            missing.push(format!("a subsection `type = \"{kind}\"`"));
            continue;
        };
        let rest = &actions[start..];
        let body = &rest[rest.find('\n').unwrap_or(rest.len())..];
        let own = documented_keys(&body[..body.find("\n#").unwrap_or(body.len())]);
        missing.extend(
            keys.iter()
                .filter(|k| !(own.contains(k) || ["type", "on"].contains(k) && common.contains(k)))
                .map(|k| format!("`{k}` of a `{kind}` action")),
        );
    }
    assert!(missing.is_empty(), "docs/configuration.md lacks {missing:?}");
}

/// The names `src/metrics.rs` registers (`registry.register("NAME", …)`).
fn registered_metrics() -> Vec<String> {
    let source = read("src/metrics.rs");
    source
        .split("registry.register(")
        .skip(1)
        .map(|call| {
            let start = call.find('"').expect("a metric name") + 1;
            let end = start + call[start..].find('"').unwrap();
            call[start..end].to_string()
        })
        .collect()
}

#[test]
fn every_metric_is_in_the_metrics_list() {
    let registered = registered_metrics();
    assert!(registered.len() >= 40, "only {} registered metrics found: {registered:?}", registered.len());
    // The names a scraper sees: counters end in `_total`, an info in `_info`
    // (Prometheus text 0.0.4 names each family by its samples).
    let exposition = willwatch::metrics::Metrics::new().render(false);
    let exposed: Vec<&str> =
        exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
    let mut names: Vec<String> = Vec::new();
    for base in &registered {
        let found: Vec<&str> = [base.clone(), format!("{base}_total"), format!("{base}_info")]
            .into_iter()
            .filter_map(|n| exposed.iter().find(|e| **e == n).copied())
            .collect();
        assert_eq!(found.len(), 1, "`{base}` is exported as {found:?}");
        names.push(found[0].to_string());
    }
    // The process metrics come from a collector, not `register`.
    names.extend(exposed.iter().filter(|n| n.starts_with("process_")).map(|n| n.to_string()));

    let operations = read("docs/operations.md");
    let list = sections(&operations)
        .into_iter()
        .find(|(heading, _)| *heading == "## Metrics")
        .map(|(_, body)| body)
        .expect("docs/operations.md has a `## Metrics` section");
    let missing: Vec<&String> =
        names.iter().filter(|n| !list.contains(&format!("`{n}`")) && !list.contains(&format!("`{n}{{"))).collect();
    assert!(missing.is_empty(), "metrics missing from the list in docs/operations.md: {missing:?}");
}

/// The anchors GitHub gives the headings of a Markdown text (code blocks
/// skipped): lower case, punctuation dropped, spaces as hyphens.
fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
        } else if !code && line.starts_with('#') {
            let heading = line.trim_start_matches('#').trim();
            let slug: String = heading
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            out.push(slug);
        }
    }
    out
}

#[test]
fn every_link_between_the_documents_leads_somewhere() {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md"), root().join("ARCHITECTURE.md")];
    files.extend(
        std::fs::read_dir(root().join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            if target.contains("://") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            let Ok(linked_text) = std::fs::read(&linked) else {
                broken.push(format!("{}: {target} (no such file)", file.display()));
                continue;
            };
            if !anchor.is_empty() && !anchors(&String::from_utf8_lossy(&linked_text)).iter().any(|a| a == anchor) {
                broken.push(format!("{}: {target} (no such heading)", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}
