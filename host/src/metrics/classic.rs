//! The classic Prometheus text format (0.0.4), for scrapers that do not ask for
//! OpenMetrics (`promtool check metrics`, older Prometheus, most agents).
//!
//! `prometheus-client` writes OpenMetrics only. The two formats differ in ways that
//! matter to a classic parser: an OpenMetrics counter family is named without its
//! `_total` suffix (its samples carry it), so a classic parser sees samples with no
//! HELP or TYPE of their own; `# UNIT` lines and the `# EOF` terminator do not exist.
//! The rewrite below renames counter families to their sample name and drops the
//! rest; samples are the same in both formats.

/// OpenMetrics text → classic text.
pub fn from_openmetrics(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let counters = counter_families(text);
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(&name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(line.trim_end()),
            None => out.push_str(&classic_type(line)),
        }
        out.push('\n');
    }
    out
}

/// Families declared `counter`.
fn counter_families(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect()
}

/// OpenMetrics types without a classic equivalent, spelled the classic way.
fn classic_type(line: &str) -> std::borrow::Cow<'_, str> {
    if let Some(name) = line.strip_prefix("# TYPE ") {
        for (open, classic) in [(" unknown", " untyped"), (" info", " gauge"), (" stateset", " gauge")] {
            if let Some(name) = name.strip_suffix(open) {
                return format!("# TYPE {name}{classic}").into();
            }
        }
    }
    line.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_and_openmetrics_only_lines_go() {
        let open = "# HELP berry_requests Relayed requests.\n# TYPE berry_requests counter\n\
                    berry_requests_total{model=\"m\"} 3\n# HELP berry_up Up.\n# TYPE berry_up gauge\n\
                    # UNIT berry_up seconds\nberry_up 1\n# EOF\n";
        let classic = from_openmetrics(open);
        assert_eq!(
            classic,
            "# HELP berry_requests_total Relayed requests.\n# TYPE berry_requests_total counter\n\
             berry_requests_total{model=\"m\"} 3\n# HELP berry_up Up.\n# TYPE berry_up gauge\nberry_up 1\n"
        );
    }

    #[test]
    fn a_counter_already_ending_in_total_is_left_alone() {
        let open = "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n# EOF\n";
        assert_eq!(from_openmetrics(open), "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n");
    }
}
