//! The Prometheus text format (0.0.4) from the OpenMetrics text the
//! registry writes. Scrapers that ask for OpenMetrics get it as written;
//! everything else (older Prometheus servers, `promtool check metrics`,
//! Telegraf, VictoriaMetrics agents, curl) gets 0.0.4, whose differences
//! are all in the metadata: a counter's `# TYPE`/`# HELP` name the
//! `_total` sample, an info metric is a gauge named `_info`, `unknown` is
//! `untyped`, and there is no `# UNIT` or `# EOF`.

/// What the `Accept` header asks for: OpenMetrics only when it says so.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').any(|part| part.trim().starts_with("application/openmetrics-text")))
}

pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text as Prometheus text 0.0.4.
pub fn to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The metadata of a family comes before its samples; HELP may precede
    // TYPE, so a family's lines are held until its TYPE is known.
    let mut held: Vec<&str> = Vec::new();
    let flush = |held: &mut Vec<&str>, out: &mut String, kind: &str| {
        for line in held.drain(..) {
            out.push_str(&rename(line, kind));
            out.push('\n');
        }
    };
    let mut kind = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            held.push(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            kind = rest.rsplit(' ').next().unwrap_or("").to_string();
            held.push(line);
            flush(&mut held, &mut out, &kind);
            continue;
        }
        flush(&mut held, &mut out, &kind);
        out.push_str(line);
        out.push('\n');
    }
    flush(&mut held, &mut out, &kind);
    out
}

/// One `# HELP` or `# TYPE` line in 0.0.4 terms.
fn rename(line: &str, kind: &str) -> String {
    let Some((marker, rest)) = line.strip_prefix("# ").and_then(|l| l.split_once(' ')) else { return line.into() };
    let Some((name, tail)) = rest.split_once(' ') else { return line.into() };
    let (name, tail) = match (marker, kind) {
        ("TYPE", "counter") => (format!("{name}_total"), "counter"),
        ("TYPE", "info") => (format!("{name}_info"), "gauge"),
        ("TYPE", "unknown") => (name.to_string(), "untyped"),
        (_, "counter") => (format!("{name}_total"), tail),
        (_, "info") => (format!("{name}_info"), tail),
        _ => (name.to_string(), tail),
    };
    format!("# {marker} {name} {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_infos_are_named_by_their_samples_and_openmetrics_markers_go() {
        let om = "# HELP w_messages Messages.\n# TYPE w_messages counter\nw_messages_total 3\n\
                  # HELP w_up Up.\n# TYPE w_up gauge\n# UNIT w_up seconds\nw_up 1\n\
                  # HELP w_build Version.\n# TYPE w_build info\nw_build_info{version=\"1\"} 1\n\
                  # TYPE w_odd unknown\nw_odd 2\n# EOF\n";
        assert_eq!(
            to_prometheus(om),
            "# HELP w_messages_total Messages.\n# TYPE w_messages_total counter\nw_messages_total 3\n\
             # HELP w_up Up.\n# TYPE w_up gauge\nw_up 1\n\
             # HELP w_build_info Version.\n# TYPE w_build_info gauge\nw_build_info{version=\"1\"} 1\n\
             # TYPE w_odd untyped\nw_odd 2\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked() {
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1")));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5"
        )));
    }
}
