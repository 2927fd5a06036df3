//! From YAML text to a [`Policy`], collecting every problem on the way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_norway::Value;

use super::expand::expand_env;
use super::locate::line_of;
use super::typed::typed;
use super::types::{Policy, PolicyFile, UpstreamPolicy};
use super::Problem;

pub(super) struct Problems<'a> {
    file: &'a str,
    source: &'a str,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(file: &'a str, source: &'a str) -> Self {
        Self {
            file,
            source,
            list: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, path: &[String], message: impl Into<String>) {
        self.push_at(path, line_of(self.source, path), message);
    }

    pub(super) fn push_at(
        &mut self,
        path: &[String],
        line: Option<usize>,
        message: impl Into<String>,
    ) {
        self.list.push(Problem {
            file: self.file.to_owned(),
            line,
            path: path.join("."),
            message: message.into(),
        });
    }

    /// The problems in file order (problems without a line first).
    pub(super) fn into_vec(mut self) -> Vec<Problem> {
        self.list.sort_by_key(|p| p.line);
        self.list
    }
}

fn p(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn policy(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<Policy> {
    let mut value: Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            problems.push_at(&[], line, format!("invalid YAML: {e}"));
            return None;
        }
    };
    if value.is_null() {
        problems.push(&[], "the policy file is empty");
        return None;
    }
    let mut env_errors = Vec::new();
    expand_env(&mut value, &mut Vec::new(), env, &mut env_errors);
    for (path, message) in env_errors {
        problems.push(&path, message);
    }

    let file: PolicyFile = typed(&value, &[], problems)?;
    if file.upstreams.is_empty() {
        problems.push(&p(&["upstreams"]), "no upstreams are defined");
    }
    if file.listen == file.admin && file.listen.port() != 0 {
        problems.push(&p(&["admin"]), "must differ from `listen`");
    }
    if file.shutdown.drain_timeout.is_zero() {
        problems.push(&p(&["shutdown", "drain_timeout"]), "must be more than 0");
    }
    for (field, problem) in file.limits.problems() {
        problems.push(&p(&["limits", field]), problem);
    }
    let mut file = file;
    if let Some(tls) = &mut file.tls {
        listener_tls(tls, problems);
    }

    let mut upstreams = BTreeMap::new();
    for (name, raw) in &file.upstreams {
        let base = p(&["upstreams", name]);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            problems.push(
                &base,
                format!("upstream name {name:?} may hold only letters, digits, `-`, `_` and `.`"),
            );
        }
        if let Some(mut up) = typed::<UpstreamPolicy>(raw, &base, problems) {
            up.name = name.clone();
            if let Some(ca) = &up.ca {
                let at = [base.as_slice(), &p(&["ca"])].concat();
                if let Some(certs) = loaded(problems, &at, crate::tls::load_certs(ca)) {
                    up.ca_certs = Arc::new(certs);
                }
            }
            upstream_rules(&up, &base, problems);
            upstreams.insert(name.clone(), Arc::new(up));
        }
    }
    routes_are_unique(&upstreams, problems);
    fallbacks_resolve(&file.upstreams, &upstreams, problems);

    Some(Policy {
        listen: file.listen,
        admin: file.admin,
        tls: file.tls,
        shutdown: file.shutdown,
        usage_log: file.usage_log,
        metrics: file.metrics,
        limits: file.limits,
        upstreams,
    })
}

fn loaded<T>(
    problems: &mut Problems,
    path: &[String],
    result: Result<T, crate::tls::TlsError>,
) -> Option<T> {
    result.map_err(|e| problems.push(path, e.to_string())).ok()
}

/// Reads the listener's certificate, key and client CA, and checks that
/// they make a TLS config.
fn listener_tls(tls: &mut super::ListenerTls, problems: &mut Problems) {
    let certs = loaded(
        problems,
        &p(&["tls", "cert"]),
        crate::tls::load_certs(&tls.cert),
    );
    let key = loaded(
        problems,
        &p(&["tls", "key"]),
        crate::tls::load_key(&tls.key),
    );
    // `Some(None)`: no client CA asked for; `None`: it could not be read.
    let client_ca = match &tls.client_ca {
        Some(ca) => loaded(
            problems,
            &p(&["tls", "client_ca"]),
            crate::tls::load_certs(ca),
        )
        .map(Some),
        None => Some(None),
    };
    let (Some(certs), Some(key), Some(client_ca)) = (certs, key, client_ca) else {
        return;
    };
    let identity = crate::tls::Identity {
        certs,
        key,
        client_ca,
    };
    match crate::tls::server_config(&identity) {
        Ok(_) => tls.identity = Some(Arc::new(identity)),
        Err(e) => problems.push(&p(&["tls", "key"]), e.to_string()),
    }
}

fn upstream_rules(up: &UpstreamPolicy, base: &[String], problems: &mut Problems) {
    let at = |parts: &[&str]| {
        let mut v = base.to_vec();
        v.extend(parts.iter().map(|s| (*s).to_owned()));
        v
    };
    let route = &up.route;
    if !route.starts_with('/') {
        problems.push(&at(&["route"]), format!("{route:?} must start with `/`"));
    } else if route.contains(['?', '#', ' ', '\t']) {
        problems.push(
            &at(&["route"]),
            format!("{route:?} must be a plain path prefix"),
        );
    }
    let positive = [
        (&["pool", "idle_timeout"][..], up.pool.idle_timeout),
        (&["pool", "connect_timeout"], up.pool.connect_timeout),
        (&["timeouts", "first_byte"], up.timeouts.first_byte),
        (&["timeouts", "idle"], up.timeouts.idle),
        (&["timeouts", "total"], up.timeouts.total),
        (&["retry", "backoff", "base"], up.retry.backoff.base),
        (
            &["concurrency", "queue_timeout"],
            up.concurrency.queue_timeout,
        ),
    ];
    for (field, d) in positive {
        if d.is_zero() {
            problems.push(&at(field), "must be more than 0");
        }
    }
    let r = &up.retry;
    if !(1..=20).contains(&r.attempts) {
        problems.push(
            &at(&["retry", "attempts"]),
            "must be from 1 (no retry) to 20",
        );
    }
    if r.backoff.max < r.backoff.base {
        problems.push(
            &at(&["retry", "backoff", "max"]),
            "must not be less than `base`",
        );
    }
    if !(0.0..=1.0).contains(&r.budget.ratio) {
        problems.push(&at(&["retry", "budget", "ratio"]), "must be from 0 to 1");
    }
    for (field, message) in up.circuit_breaker.problems() {
        problems.push(&at(&["circuit_breaker", field]), message);
    }
    if up.concurrency.max_in_flight == 0 {
        problems.push(&at(&["concurrency", "max_in_flight"]), "must be at least 1");
    }
    if let Some(rl) = &up.rate_limit {
        if rl.requests_per_second.is_none() && rl.tokens_per_minute.is_none() {
            problems.push(
                &at(&["rate_limit"]),
                "set `requests_per_second`, `tokens_per_minute` or both",
            );
        }
        if rl
            .requests_per_second
            .is_some_and(|r| !(r > 0.0 && r.is_finite()))
        {
            problems.push(
                &at(&["rate_limit", "requests_per_second"]),
                "must be more than 0",
            );
        }
        if rl.burst == Some(0) {
            problems.push(&at(&["rate_limit", "burst"]), "must be at least 1");
        }
        if rl.burst.is_some() && rl.requests_per_second.is_none() {
            problems.push(&at(&["rate_limit", "burst"]), "needs `requests_per_second`");
        }
        if rl.tokens_per_minute == Some(0) {
            problems.push(
                &at(&["rate_limit", "tokens_per_minute"]),
                "must be at least 1",
            );
        }
    }
}

fn normalized(route: &str) -> &str {
    match route.trim_end_matches('/') {
        "" => "/",
        r => r,
    }
}

fn routes_are_unique(upstreams: &BTreeMap<String, Arc<UpstreamPolicy>>, problems: &mut Problems) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (name, up) in upstreams {
        let route = normalized(&up.route);
        if let Some(other) = seen.insert(route, name) {
            problems.push(
                &p(&["upstreams", name, "route"]),
                format!("route {route:?} is also the route of upstream `{other}`"),
            );
        }
    }
}

/// Every `fallback` names another upstream, and following them never loops.
fn fallbacks_resolve(
    declared: &BTreeMap<String, Value>,
    upstreams: &BTreeMap<String, Arc<UpstreamPolicy>>,
    problems: &mut Problems,
) {
    // Each upstream has at most one fallback, so the fallbacks form chains
    // that end or run into a cycle. Every upstream is walked once: a walk
    // stops at an upstream an earlier walk passed (its cycle, if any, is
    // reported already) and reports a cycle when it meets itself. Linear in
    // the number of upstreams, however long the chains.
    let mut walked: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (walk, (name, up)) in upstreams.iter().enumerate() {
        let Some(target) = &up.fallback else { continue };
        let path = p(&["upstreams", name, "fallback"]);
        if target == name {
            problems.push(&path, "an upstream cannot fall back to itself");
            continue;
        }
        if !declared.contains_key(target) {
            problems.push(&path, format!("names no upstream: `{target}`"));
            continue;
        }
        let mut chain: Vec<&str> = Vec::new();
        let mut current = name.as_str();
        loop {
            match walked.insert(current, walk) {
                Some(earlier) if earlier == walk => {
                    chain.push(current);
                    let shown = if chain.len() > 9 {
                        format!(
                            "{} -> ... ({} more) -> {}",
                            chain[..4].join(" -> "),
                            chain.len() - 5,
                            current
                        )
                    } else {
                        chain.join(" -> ")
                    };
                    problems.push(&path, format!("fallbacks form a cycle: {shown}"));
                    break;
                }
                Some(_) => break,
                None => chain.push(current),
            }
            match upstreams.get(current).and_then(|u| u.fallback.as_deref()) {
                Some(next) if next != current && upstreams.contains_key(next) => current = next,
                _ => break,
            }
        }
    }
}
