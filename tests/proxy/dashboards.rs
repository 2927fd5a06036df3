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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use http::Response;
use serde::Deserialize;
use serde_norway::{Mapping, Value};

use crate::support::upstream::full;
use crate::support::*;

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

fn json_strings(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => into.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, into)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, into)),
        _ => {}
    }
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
    let ok = MockUpstream::start(|_| async {
        Response::builder()
            .header("content-type", "application/json")
            .body(full(OK_BODY))
            .unwrap()
    })
    .await;
    // A successful answer that reports no usage (weir_usage_missing_total).
    let silent = MockUpstream::start(|_| async {
        Response::builder()
            .header("content-type", "application/json")
            .body(full(NO_USAGE_BODY))
            .unwrap()
    })
    .await;
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

/// Helm's merge of a values file into the chart's: maps merge key by key,
/// `null` deletes a key, anything else replaces.
fn helm_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    helm_merge(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// The policy the chart renders into its ConfigMap (the `weir.policy`
/// helper in `_helpers.tpl`).
fn chart_policy(values: &Value) -> String {
    let mut policy = values["policy"].as_mapping().expect("policy").clone();
    for key in ["listen", "admin", "shutdown"] {
        assert!(!policy.contains_key(key), "policy.{key} is the chart's");
    }
    let host = values["listenAddress"].as_str().expect("listenAddress");
    let addr = |port: &Value| {
        let port = port.as_u64().expect("port");
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    policy.insert("listen".into(), addr(&values["ports"]["proxy"]).into());
    policy.insert("admin".into(), addr(&values["ports"]["admin"]).into());
    let drain = values["drainTimeoutSeconds"].as_u64().expect("drain");
    let mut shutdown = Mapping::new();
    shutdown.insert("drain_timeout".into(), format!("{drain}s").into());
    policy.insert("shutdown".into(), shutdown.into());
    serde_norway::to_string(&policy).unwrap()
}

fn assert_valid_policy(text: &str, what: &str) -> weir::config::Policy {
    weir::config::parse(text, what, &|_| Some("from-a-secret".to_owned()))
        .unwrap_or_else(|e| panic!("{what} is not a valid weir policy: {e}\n{text}"))
}

/// Helm reads values as YAML 1.1: a bare `on`, `off`, `yes`, `no`, `y` or
/// `n` key becomes a boolean (so `retry.on` would silently be `true`).
fn assert_no_yaml11_boolean_keys(path: &str) {
    for (n, line) in read(path).lines().enumerate() {
        let code = line.split(" #").next().unwrap().trim_start();
        let key = code.split(':').next().unwrap_or("");
        let boolean = ["on", "off", "yes", "no", "y", "n"]
            .iter()
            .any(|b| key.eq_ignore_ascii_case(b));
        assert!(
            !(boolean && code.contains(':')),
            "{path}:{}: quote the key {key:?}: Helm's YAML 1.1 reads it as a boolean",
            n + 1
        );
    }
}

#[test]
fn chart_values_render_valid_policies() {
    let chart = yaml("helm/weir/Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "weir");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml's appVersion (the default image tag) is the crate's version"
    );

    let values = yaml("helm/weir/values.yaml");
    assert_no_yaml11_boolean_keys("helm/weir/values.yaml");
    let default = assert_valid_policy(&chart_policy(&values), "the chart's default policy");
    assert_eq!(default.listen.port(), 8080);
    assert_eq!(default.admin.port(), 9901);
    assert!(default.listen.ip().is_unspecified() && default.admin.ip().is_unspecified());
    assert_eq!(
        default.shutdown.drain_timeout.as_secs(),
        values["drainTimeoutSeconds"].as_u64().unwrap()
    );

    let gateway = yaml("examples/kubernetes/gateway-values.yaml");
    assert_no_yaml11_boolean_keys("examples/kubernetes/gateway-values.yaml");
    let mut merged = values.clone();
    helm_merge(&mut merged, &gateway);
    let policy = assert_valid_policy(&chart_policy(&merged), "gateway-values.yaml's policy");
    assert_eq!(
        policy.upstreams.keys().collect::<Vec<_>>(),
        ["embeddings", "openai"]
    );
    assert_eq!(policy.shutdown.drain_timeout.as_secs(), 120);
}

#[test]
fn sidecar_example_is_valid() {
    let docs = yaml_documents("examples/kubernetes/sidecar.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment"]);
    let policy_text = docs[0]["data"]["weir.yaml"].as_str().expect("weir.yaml");
    let policy = assert_valid_policy(policy_text, "sidecar.yaml's policy");
    assert!(
        policy.listen.ip().is_loopback(),
        "the sidecar proxy stays in the pod"
    );
    assert!(
        policy.admin.ip().is_unspecified(),
        "probes reach admin on the pod IP"
    );

    let pod = &docs[1]["spec"]["template"]["spec"];
    let weir = &pod["initContainers"][0];
    assert_eq!(weir["name"], "weir");
    assert_eq!(weir["restartPolicy"], "Always", "a native sidecar");
    let app = &pod["containers"][0];
    let env = |container: &Value, name: &str| -> Option<Value> {
        container["env"]
            .as_sequence()?
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
    };
    assert_eq!(
        env(app, "OPENAI_BASE_URL").unwrap()["value"].as_str(),
        Some(format!("http://{}/v1", policy.listen).as_str())
    );
    let key = env(weir, "OPENAI_API_KEY").expect("weir has the key");
    assert!(
        key["valueFrom"]["secretKeyRef"].is_mapping(),
        "from a Secret"
    );
    assert!(
        !serde_norway::to_string(app)
            .unwrap()
            .contains("secretKeyRef"),
        "the app gets no secret"
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert!(weir[probe]["httpGet"]["path"].is_string(), "weir {probe}");
    }
    assert_eq!(weir["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(weir["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(weir["volumeMounts"][0]["mountPath"], "/etc/weir/config");
    assert!(weir["volumeMounts"][0]["subPath"].is_null());
}

/// No helm here: lint the templates for what a render would catch first.
#[test]
fn chart_templates_reference_existing_values_and_helpers() {
    let values = yaml("helm/weir/values.yaml");
    let dir = repo("helm/weir/templates");
    let mut templates = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        templates.insert(name, std::fs::read_to_string(&path).unwrap());
    }
    for expected in [
        "_helpers.tpl",
        "configmap.yaml",
        "dashboard-configmap.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "prometheusrule.yaml",
        "service.yaml",
        "serviceaccount.yaml",
        "servicemonitor.yaml",
        "NOTES.txt",
    ] {
        assert!(templates.contains_key(expected), "templates/{expected}");
    }
    let mut defined = BTreeSet::new();
    let mut included = BTreeSet::new();
    let mut problems = Vec::new();
    for (name, text) in &templates {
        if text.matches("{{").count() != text.matches("}}").count() {
            problems.push(format!("{name}: unbalanced {{{{ }}}}"));
        }
        let mut opened = 0i32;
        for action in text.split("{{").skip(1) {
            let action = action.split("}}").next().unwrap();
            let words: Vec<&str> = action.trim_start_matches('-').split_whitespace().collect();
            match words.first().copied() {
                Some("if" | "with" | "range" | "define") => opened += 1,
                Some("end") => opened -= 1,
                _ => {}
            }
            if words.first() == Some(&"define") {
                defined.insert(words[1].trim_matches('"').to_owned());
            }
            for pair in words.windows(2) {
                if pair[0] == "include" || pair[0] == "(include" {
                    included.insert(pair[1].trim_matches('"').to_owned());
                }
            }
            for (i, _) in action.match_indices(".Values.") {
                let path: String = action[i + ".Values.".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                    .collect();
                let mut at = &values;
                for key in path.trim_end_matches('.').split('.') {
                    match at.get(key) {
                        Some(next) => at = next,
                        None => {
                            problems.push(format!("{name}: .Values.{path} is not in values.yaml"));
                            break;
                        }
                    }
                }
            }
        }
        if opened != 0 {
            problems.push(format!("{name}: {opened} block(s) without end"));
        }
        if text.contains("subPath:") {
            problems.push(format!(
                "{name}: subPath mounts never see ConfigMap updates"
            ));
        }
    }
    for name in included.difference(&defined) {
        problems.push(format!("include {name:?} is defined nowhere"));
    }
    for file in ["dashboards/weir.json", "rules/alerts.yaml"] {
        assert!(
            templates
                .values()
                .any(|t| t.contains(&format!(".Files.Get {file:?}"))),
            "no template reads {file}"
        );
        assert!(repo(&format!("helm/weir/{file}")).is_file());
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
