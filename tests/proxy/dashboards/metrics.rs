//! The metrics table of the README against the dashboard, the alert rules
//! and a real scrape after traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use http::Response;
use serde_norway::Value;

use super::*;
use crate::support::upstream::full;
use crate::support::*;

/// `name -> type` from the README's metrics table: the table users read is
/// the one this test holds to the dashboard, the alerts and the scrape.
fn documented_metrics() -> BTreeMap<String, String> {
    let text = read("README.md");
    let section = text
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a \"## Metrics\" section");
    let metrics: BTreeMap<String, String> = section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("`weir_")?.strip_suffix('`')?;
            Some((format!("weir_{name}"), cells.get(2)?.to_string()))
        })
        .collect();
    assert!(
        metrics.len() >= 10,
        "the metrics table was not found in README.md's \"## Metrics\" section"
    );
    metrics
}

/// Every `weir_...` identifier in `text`.
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("weir_") {
        let start = at + found;
        let mut end = start + "weir_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let glued =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !glued {
            into.insert(text[start..end].to_owned());
        }
        at = end;
    }
}

/// The metric family a name belongs to: a histogram's `_bucket`, `_sum` and
/// `_count` series are its family's.
fn family(name: &str, documented: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if documented.get(base).map(String::as_str) == Some("histogram") {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

fn yaml_strings(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(s) => into.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|v| yaml_strings(v, into)),
        Value::Mapping(map) => map.values().for_each(|v| yaml_strings(v, into)),
        Value::Tagged(tagged) => yaml_strings(&tagged.value, into),
        _ => {}
    }
}

/// The families of a scrape and their types, read by `prometheus-parse`.
fn scraped_families(scrape: &str) -> BTreeMap<String, String> {
    let lines = scrape.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the scrape parses");
    // prometheus-parse folds `_bucket` into the histogram's sample but gives
    // `_sum` and `_count` samples of their own: they belong to the family.
    let histograms: BTreeSet<&str> = parsed
        .samples
        .iter()
        .filter(|s| matches!(s.value, prometheus_parse::Value::Histogram(_)))
        .map(|s| s.metric.as_str())
        .collect();
    let part_of_histogram = |name: &str| {
        ["_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|b| histograms.contains(b))
        })
    };
    parsed
        .samples
        .iter()
        .filter(|sample| !part_of_histogram(&sample.metric))
        .map(|sample| {
            let kind = match sample.value {
                prometheus_parse::Value::Counter(_) => "counter",
                prometheus_parse::Value::Gauge(_) => "gauge",
                prometheus_parse::Value::Histogram(_) => "histogram",
                prometheus_parse::Value::Summary(_) => "summary",
                prometheus_parse::Value::Untyped(_) => "untyped",
            };
            (sample.metric.clone(), kind.to_owned())
        })
        .collect()
}

/// Metric names the dashboard and the alert rules (and their unit tests)
/// use, with where each is used.
fn names_used() -> BTreeMap<String, Vec<&'static str>> {
    let mut used: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut sources: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut strings = Vec::new();
    json_strings(&dashboard(), &mut strings);
    sources.push(("examples/grafana/weir.json", strings));
    for path in [
        "examples/prometheus/alerts.yaml",
        "examples/prometheus/alerts.test.yaml",
    ] {
        let mut strings = Vec::new();
        yaml_strings(&yaml(path), &mut strings);
        sources.push((path, strings));
    }
    for (path, strings) in sources {
        let mut names = BTreeSet::new();
        strings.iter().for_each(|s| metric_names(s, &mut names));
        assert!(!names.is_empty(), "{path} names no weir metric");
        for name in names {
            used.entry(name).or_default().push(path);
        }
    }
    used
}

const OK_BODY: &str = r#"{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
const NO_USAGE_BODY: &str = r#"{"id":"c2","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-dashboards-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_in_the_readme_table_and_the_scrape() {
    let documented = documented_metrics();
    let used = names_used();

    // 1. Every name used is a documented metric (or a histogram series of one).
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| !documented.contains_key(&family(name, &documented)))
        .map(|(name, paths)| format!("{name} (in {})", paths.join(", ")))
        .collect();
    assert!(
        unknown.is_empty(),
        "not in README.md's metrics table: {unknown:?}"
    );
    let families: BTreeSet<String> = used.keys().map(|n| family(n, &documented)).collect();

    // ... and every documented metric has a place on the dashboard.
    let mut on_dashboard = BTreeSet::new();
    let mut strings = Vec::new();
    for panel in panels(&dashboard()) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            json_strings(&target["expr"], &mut strings);
        }
    }
    strings
        .iter()
        .for_each(|s| metric_names(s, &mut on_dashboard));
    let on_dashboard: BTreeSet<String> = on_dashboard
        .iter()
        .map(|n| family(n, &documented))
        .collect();
    let missing_panels: Vec<&String> = documented
        .keys()
        .filter(|m| !on_dashboard.contains(*m))
        .collect();
    assert!(
        missing_panels.is_empty(),
        "documented metrics no dashboard query uses: {missing_panels:?}"
    );

    // 2. Traffic that creates a series in every family weir can fill today:
    //    successes, an upstream failing with 503 (retries, breaker opening,
    //    circuit_open rejections), a request matching no route, and policy
    //    reloads that succeed and fail.
    let ok = MockUpstream::json(OK_BODY).await;
    // A successful answer that reports no usage (weir_usage_missing_total).
    let silent = MockUpstream::json(NO_USAGE_BODY).await;
    let failing = MockUpstream::start(|_| async {
        Response::builder().status(503).body(full("down")).unwrap()
    })
    .await;
    let yaml = policy(&format!(
        "  ok:
    route: /ok
    url: {}
    kind: openai
  silent:
    route: /silent
    url: {}
    kind: openai
  failing:
    route: /failing
    url: {}
    kind: openai
    retry:
      attempts: 2
      backoff: {{ base: 1ms, max: 2ms }}
    circuit_breaker:
      consecutive_failures: 2
      open_for: 60s
",
        ok.url(),
        silent.url(),
        failing.url()
    ));
    let weir = TestWeir::start(&yaml).await;
    for _ in 0..3 {
        let response = send(post(&weir.url("/ok/v1/chat/completions"), CHAT)).await;
        assert_eq!(response.status(), 200);
        body_bytes(response).await;
    }
    let response = send(post(&weir.url("/silent/v1/chat/completions"), CHAT)).await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let response = send(get(&weir.url("/nowhere"))).await;
    assert_eq!(response.status(), 404);
    body_bytes(response).await;
    for _ in 0..4 {
        let response = send(post(&weir.url("/failing/v1/chat/completions"), CHAT)).await;
        assert_eq!(response.status(), 503);
        body_bytes(response).await;
    }
    let good = temp_file("weir.yaml", &yaml);
    weir.handle
        .reload(&good)
        .await
        .expect("the same policy reloads");
    let bad = temp_file("weir.yaml", "upstreams: [this is not a policy]\n");
    weir.handle
        .reload(&bad)
        .await
        .expect_err("an invalid policy is rejected");
    let scrape = weir.scrape().await;
    let scraped = scraped_families(&scrape);
    for path in [&good, &bad] {
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    // 3. What the dashboard and alerts use is exported, under the documented type.
    for name in &families {
        if let Some(kind) = scraped.get(name) {
            assert_eq!(
                Some(kind),
                documented.get(name),
                "{name} is exported as a {kind}, README.md says {:?}",
                documented.get(name)
            );
        }
    }
    // A family appears once it has a series; this traffic creates one in
    // every family (the ok upstream reports OpenAI usage, so tokens too).
    let absent: Vec<&str> = families
        .iter()
        .filter(|n| !scraped.contains_key(*n))
        .map(String::as_str)
        .collect();
    assert!(
        absent.is_empty(),
        "the dashboard or alerts use {absent:?}, which weir did not export after traffic \
         that should create them\n--- scrape ---\n{scrape}"
    );

    // 4. The table is what weir exports: every documented family appears
    //    after this traffic, under its documented type, and weir exports
    //    nothing the table does not name.
    let undocumented: Vec<&String> = scraped
        .keys()
        .filter(|name| !documented.contains_key(*name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "weir exports {undocumented:?}, which README.md's metrics table does not list"
    );
    let unexported: Vec<&String> = documented
        .keys()
        .filter(|name| !scraped.contains_key(*name))
        .collect();
    assert!(
        unexported.is_empty(),
        "README.md's metrics table lists {unexported:?}, which weir did not export \
         after traffic that should create them\n--- scrape ---\n{scrape}"
    );
    weir.shutdown().await;
}
