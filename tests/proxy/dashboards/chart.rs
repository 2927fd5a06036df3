//! The Helm chart: its values render valid policies, the sidecar example
//! is valid, and the templates reference only values and helpers that exist.

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::{Mapping, Value};

use super::*;

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
