//! The deployment artefacts agree with weir: every metric the Grafana
//! dashboard and the Prometheus alerts name is in the README's metrics
//! table, that table is what `/metrics` exports, with the type weir exports it under, and appears in a real scrape
//! once traffic has created its series; the chart's copies of the dashboard
//! and the rules are the examples' byte for byte; every YAML file parses;
//! and every policy the chart or the examples would hand weir passes weir's
//! own validation.
//!
//! No helm binary is needed: the chart's policy rendering (values merged as
//! Helm merges them, then `listen`/`admin`/`shutdown` filled in as
//! `_helpers.tpl` does) is re-done here, and the templates are linted for
//! references to values and helpers that do not exist.

mod chart;
mod metrics;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    let full = repo(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// Every document of a multi-document YAML file.
fn yaml_documents(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path} is not YAML: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn json_strings(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => into.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, into)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, into)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("examples/grafana/weir.json"))
        .expect("examples/grafana/weir.json is JSON")
}

/// Every panel, row contents included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let top = dashboard["panels"].as_array().expect("panels");
    for panel in top {
        out.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn chart_copies_are_identical_to_the_examples() {
    for (chart, example) in [
        (
            "helm/weir/dashboards/weir.json",
            "examples/grafana/weir.json",
        ),
        (
            "helm/weir/rules/alerts.yaml",
            "examples/prometheus/alerts.yaml",
        ),
    ] {
        assert!(
            std::fs::read(repo(chart)).unwrap() == std::fs::read(repo(example)).unwrap(),
            "{chart} differs from {example}: copy one over the other"
        );
    }
}

#[test]
fn dashboard_is_well_formed() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "weir-overview");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "upstream"]);
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} ignores the datasource variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let per_upstream = expr.contains("upstream")
                && !expr.contains("weir_config_")
                && !expr.contains("weir_usage_events_dropped_total");
            if per_upstream {
                assert!(
                    expr.contains(r#"upstream=~"$upstream""#),
                    "panel {title:?} does not filter by $upstream: {expr}"
                );
            }
        }
    }
}

#[test]
fn alert_rules_have_severity_and_annotations() {
    let rules = yaml("examples/prometheus/alerts.yaml");
    let groups = rules["groups"].as_sequence().expect("groups");
    let mut alerts = BTreeSet::new();
    for group in groups {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("only alerting rules");
            assert!(alerts.insert(name.to_owned()), "{name} twice");
            assert!(rule["expr"].as_str().is_some(), "{name}: expr");
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning" | "info")),
                "{name}: severity {severity:?}"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    rule["annotations"][annotation].as_str().is_some(),
                    "{name}: {annotation}"
                );
            }
        }
    }
    // The unit tests cover every alert.
    let tests = read("examples/prometheus/alerts.test.yaml");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "alerts.test.yaml has no test for {alert}"
        );
    }
}
