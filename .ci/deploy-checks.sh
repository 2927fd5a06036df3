#!/usr/bin/env bash
# Checks of the deployment artefacts that need more than cargo:
#
#   1. promtool check rules   on examples/prometheus/alerts.yaml (and the chart's copy)
#   2. promtool test rules    the alerts' unit tests (alerts.test.yaml)
#   3. promtool check rules   on every Grafana panel query, as recording rules
#   4. promtool check metrics on a real scrape of the weir binary, after traffic
#      through it to the mock LLM (successes, a stream, embeddings, no route,
#      an unreachable upstream, a good and a bad SIGHUP reload)
#   5. a real Prometheus scraping that weir, with the alert rules loaded:
#      every dashboard query must evaluate without error, every rule must be
#      healthy, and queries of series weir always exports must return data
#   6. the Dockerfile: its dependency stage's stub targets (its own lines, run
#      here) satisfy Cargo.toml with Cargo.lock --locked; .dockerignore lets in
#      every file the build reads; its default-policy derivation (its own sed
#      expression on policies/openai.yaml) passes `weir check`
#
# Not checked here (no container engine, no helm binary on these machines):
# `docker build` and `helm template`/`helm lint`. `cargo test --test proxy
# dashboards` covers the metric-name cross-check, YAML parsing, the chart's
# rendered policies and a lint of the chart's templates.
#
# Installs promtool and prometheus (Debian's `prometheus` package) when
# missing; fails if it cannot. Run from anywhere: bash .ci/deploy-checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

say() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'deploy-checks: FAILED: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- tools
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    say "installing promtool and prometheus (Debian package prometheus)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || fail "promtool is missing and I am not root (no sudo) to apt-get install prometheus"
        sudo="sudo"
    fi
    # The package's service must not start on a machine that has an init: we run our own.
    if { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
        :
    else
        fail "apt-get install prometheus failed; install promtool by hand"
    fi
fi
command -v promtool >/dev/null || fail "promtool still missing after installing prometheus"
command -v prometheus >/dev/null || fail "prometheus still missing after installing it"
command -v curl >/dev/null || fail "curl is needed"
command -v python3 >/dev/null || fail "python3 is needed"
promtool --version 2>&1 | head -1

work="$(mktemp -d "${TMPDIR:-/tmp}/weir-deploy-checks.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1, 2: rules
say "promtool check rules (alerts)"
cmp -s examples/prometheus/alerts.yaml helm/weir/rules/alerts.yaml ||
    fail "helm/weir/rules/alerts.yaml differs from examples/prometheus/alerts.yaml"
cmp -s examples/grafana/weir.json helm/weir/dashboards/weir.json ||
    fail "helm/weir/dashboards/weir.json differs from examples/grafana/weir.json"
promtool check rules examples/prometheus/alerts.yaml

say "promtool test rules (alert unit tests)"
promtool test rules examples/prometheus/alerts.test.yaml

# ---------------------------------------------------------------- 3: dashboard queries
# Every panel query of the dashboard, with Grafana's variables replaced:
# $__rate_interval -> RANGE, $__interval -> 1m, $upstream -> .* (its "All"
# value). Prints "id<TAB>title<TAB>expr" lines; fails on any other variable.
dashboard_queries() {
    python3 - "$1" <<'PY'
import json, re, sys

rng = sys.argv[1]
dashboard = json.load(open("examples/grafana/weir.json"))
panels = []
for panel in dashboard["panels"]:
    panels.append(panel)
    panels.extend(panel.get("panels", []))
count = 0
for panel in panels:
    for i, target in enumerate(panel.get("targets", [])):
        expr = target["expr"]
        expr = expr.replace("$__rate_interval", rng).replace("${__rate_interval}", rng)
        expr = expr.replace("$__interval", "1m").replace("${__interval}", "1m")
        expr = expr.replace("${upstream}", ".*").replace("$upstream", ".*")
        left = re.findall(r"\$\{?\w+", expr)
        if left:
            sys.exit(f"panel {panel['id']} ({panel['title']}): unknown variable(s) {left} in {expr}")
        print(f"{panel['id']}_{i}\t{panel['title']}\t{' '.join(expr.split())}")
        count += 1
if count < 20:
    sys.exit(f"only {count} queries found in the dashboard")
PY
}

say "promtool check rules (every dashboard query as a recording rule)"
dashboard_queries 5m >"$work/queries.tsv"
python3 - "$work/queries.tsv" >"$work/dashboard-rules.yaml" <<'PY'
import json, sys
print("groups:")
print("  - name: dashboard")
print("    rules:")
for line in open(sys.argv[1]):
    ident, _title, expr = line.rstrip("\n").split("\t")
    # JSON strings are valid YAML double-quoted scalars.
    print(f"      - record: {json.dumps('dashboard:panel_' + ident)}")
    print(f"        expr: {json.dumps(expr)}")
PY
promtool check rules "$work/dashboard-rules.yaml"

# ---------------------------------------------------------------- 6: Dockerfile's default policy
say "cargo build (weir, mock_llm)"
cargo build --locked --bin weir --example mock_llm
# Where cargo put them: CARGO_TARGET_DIR, a config's build.target-dir or ./target.
target_dir=$(cargo metadata --locked --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
weir="$target_dir/debug/weir"
mock="$target_dir/debug/examples/mock_llm"
[ -x "$weir" ] && [ -x "$mock" ] || fail "cargo build left no $weir or $mock"

say "the Dockerfile's dependency stage: its stubs satisfy the manifest and the lock"
mkdir "$work/stub"
cp Cargo.toml Cargo.lock "$work/stub/"
sed -n '/^# --- stubs: begin/,/^# --- stubs: end/p' Dockerfile | grep -v '^#' | sed '1s/^RUN //' >"$work/stubs.sh"
grep -q 'Cargo.toml' "$work/stubs.sh" || fail "no '# --- stubs: begin/end' block in the Dockerfile: update this check"
(cd "$work/stub" && sh -eu "$work/stubs.sh" && cargo metadata --locked --format-version 1 >/dev/null) ||
    fail "the Dockerfile's dependency stage would fail: stub targets or Cargo.lock out of step with Cargo.toml"
(cd "$work/stub" && find . -name '*.rs' | sort | sed 's/^/  stub: /')

say "the Docker build context (.dockerignore) holds every file the build reads"
python3 - <<'PY'
import os, re, sys
allowed = [l[1:].strip().rstrip("/") for l in open(".dockerignore") if l.startswith("!")]
def in_context(path):
    rel = os.path.relpath(path)
    return any(rel == a or rel.startswith(a + "/") for a in allowed)
problems = []
if os.path.exists("build.rs") and not in_context("build.rs"):
    problems.append("build.rs is outside the build context")
for root, _, files in os.walk("src"):
    for name in files:
        path = os.path.join(root, name)
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', open(path, errors="replace").read()):
            target = os.path.normpath(os.path.join(root, m.group(1)))
            if not in_context(target):
                problems.append(f"{path} includes {m.group(1)}, outside the build context")
for needed in ("Cargo.toml", "Cargo.lock", "src", "policies"):
    if not in_context(needed):
        problems.append(f"{needed} is not in the build context")
if problems:
    sys.exit("\n".join(problems))
print("  context: " + ", ".join(allowed))
PY

say "the Dockerfile's default policy passes weir check"
sed_expr="$(sed -n "s/.*sed -E '\([^']*\)' policies\/openai.yaml.*/\1/p" Dockerfile)"
[ -n "$sed_expr" ] || fail "the Dockerfile no longer derives /etc/weir/weir.yaml with sed -E '...' policies/openai.yaml: update this check"
sed -E "$sed_expr" policies/openai.yaml >"$work/docker-default.yaml"
grep -q '^listen: 0\.0\.0\.0:8080$' "$work/docker-default.yaml" || fail "docker default policy: listen is not 0.0.0.0:8080"
grep -q '^admin: 0\.0\.0\.0:9901$' "$work/docker-default.yaml" || fail "docker default policy: admin is not 0.0.0.0:9901"
OPENAI_API_KEY=deploy-check "$weir" check --config "$work/docker-default.yaml"

# ---------------------------------------------------------------- 4: a real scrape
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r mock_port proxy_port admin_port dead_port prom_port <<<"$(free_ports 5)"

cat >"$work/weir.yaml" <<EOF
listen: 127.0.0.1:$proxy_port
admin: 127.0.0.1:$admin_port
shutdown:
  drain_timeout: 2s
upstreams:
  mock:
    route: /v1
    url: http://127.0.0.1:$mock_port/v1
    kind: openai
    pool: { warm: 1 }
  embed:
    route: /embed
    url: http://127.0.0.1:$mock_port/v1
    kind: embeddings
  # Nothing listens there: upstream_connect errors, retries, an open breaker.
  dead:
    route: /dead
    url: http://127.0.0.1:$dead_port
    kind: generic
    pool: { connect_timeout: 200ms }
    retry:
      attempts: 2
      backoff: { base: 1ms, max: 5ms }
    circuit_breaker:
      consecutive_failures: 2
      open_for: 60s
EOF
cp "$work/weir.yaml" "$work/weir.good.yaml"

# wait_ready NAME URL PID LOG SECONDS: until URL answers, the process lives,
# and at most SECONDS; shows the process's log when it fails.
wait_ready() {
    local name=$1 url=$2 pid=$3 log=$4 seconds=$5
    for _ in $(seq 1 $((seconds * 2))); do
        curl -fsS "$url" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "$name exited"; }
        sleep 0.5
    done
    cat "$log" >&2
    fail "$name not ready within $seconds s"
}

say "starting mock_llm on :$mock_port and weir (WEIR_CONFIG) on :$proxy_port, admin :$admin_port"
"$mock" --listen "127.0.0.1:$mock_port" --chunk-delay 5ms >"$work/mock.log" 2>&1 &
pids+=($!)
WEIR_CONFIG="$work/weir.yaml" RUST_LOG=info "$weir" --log-format json >"$work/weir.log" 2>&1 &
weir_pid=$!
pids+=("$weir_pid")

wait_ready weir "http://127.0.0.1:$admin_port/readyz" "$weir_pid" "$work/weir.log" 60

proxy="http://127.0.0.1:$proxy_port"
chat='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
stream='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
traffic() {
    local _
    for _ in 1 2 3 4 5; do
        curl -fsS -o /dev/null "$proxy/v1/chat/completions" -H 'content-type: application/json' -d "$chat"
    done
    curl -fsS -N -o /dev/null "$proxy/v1/chat/completions" -H 'content-type: application/json' -d "$stream"
    curl -fsS -o /dev/null "$proxy/embed/embeddings" -H 'content-type: application/json' \
        -d '{"model":"emb","input":["a","b"]}'
    curl -sS -o /dev/null -w '%{http_code}' "$proxy/nowhere" | grep -qx 404 || fail "no_route did not answer 404"
    for _ in 1 2 3; do
        code="$(curl -sS -o /dev/null -w '%{http_code}' "$proxy/dead/x")"
        case "$code" in 502 | 503) ;; *) fail "the dead upstream answered $code, not 502/503" ;; esac
    done
}

say "traffic, and SIGHUP reloads (one valid, one invalid)"
traffic
kill -HUP "$weir_pid"
sleep 0.5
printf 'upstreams: [not a policy]\n' >"$work/weir.yaml"
kill -HUP "$weir_pid"
sleep 0.5
cp "$work/weir.good.yaml" "$work/weir.yaml"
kill -HUP "$weir_pid"
sleep 0.5
kill -0 "$weir_pid" 2>/dev/null || { cat "$work/weir.log" >&2; fail "weir died on reload"; }

say "promtool check metrics (a scrape of weir after traffic)"
curl -fsS "http://127.0.0.1:$admin_port/metrics" >"$work/metrics.txt"
grep -c '^weir_' "$work/metrics.txt" | sed 's/^/samples: /'
grep '^# TYPE' "$work/metrics.txt" | sed 's/^# TYPE /  /'
if promtool check metrics <"$work/metrics.txt" >"$work/lint.txt" 2>&1; then
    echo "promtool check metrics: no problems"
else
    cat "$work/lint.txt"
    fail "promtool check metrics found problems in weir's exposition"
fi

# ---------------------------------------------------------------- 5: Prometheus evaluates it all
say "prometheus on :$prom_port scraping weir; every dashboard query and alert rule evaluated"
cp examples/prometheus/alerts.yaml "$work/alerts.yaml"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yaml
scrape_configs:
  - job_name: weir
    static_configs:
      - targets: ["127.0.0.1:$admin_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
pids+=("$prom_pid")
prom="http://127.0.0.1:$prom_port"
wait_ready prometheus "$prom/-/ready" "$prom_pid" "$work/prometheus.log" 30
# Rates need two scrapes with traffic between them.
for _ in 1 2 3; do
    sleep 2
    traffic
done
sleep 3

dashboard_queries 1m >"$work/queries-eval.tsv"
python3 - "$prom" "$work/queries-eval.tsv" <<'PY'
import json, re, sys, urllib.error, urllib.parse, urllib.request

prom, queries = sys.argv[1], sys.argv[2]

def get(path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)

# Series weir exports from its first scrape on, whatever the traffic and
# whichever features are built: a query over only these must return data.
always = ("weir_requests_total", "weir_request_duration_seconds", "weir_upstream_first_byte_seconds",
          "weir_overhead_seconds", "weir_upstream_attempts_total", "weir_rejected_total",
          "weir_circuit_state", "weir_in_flight", "weir_queue_depth",
          "weir_upstream_connections_opened_total", "weir_usage_events_dropped_total",
          "weir_config_reloads_total", "weir_config_last_reload_success_timestamp_seconds")
errors, empty_required, empty = [], [], []
for line in open(queries):
    ident, title, expr = line.rstrip("\n").split("\t")
    answer = get("/api/v1/query", query=expr)
    if answer.get("status") != "success":
        errors.append(f"panel {ident} ({title}): {answer.get('error')}\n    {expr}")
        continue
    n = len(answer["data"]["result"])
    fams = {w.removesuffix("_bucket") for w in re.findall(r"weir_[a-z0-9_]+", expr)}
    print(f"  {'ok   ' if n else 'EMPTY'} {n:3d} series  panel {ident:6s} {title}")
    if n == 0:
        (empty_required if fams and fams <= set(always) else empty).append(f"panel {ident} ({title})")

# Alert rules: loaded and evaluated without error.
rules = get("/api/v1/rules")
loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
bad_rules = [f"{r['name']}: {r.get('lastError')}" for r in loaded if r.get("health") != "ok"]
print(f"  {len(loaded)} alert rules loaded; health: " + ", ".join(f"{r['name']}={r.get('health')}" for r in loaded))
firing = [a["labels"]["alertname"] + "{" + a["labels"].get("upstream", "") + "}" for a in get("/api/v1/alerts")["data"]["alerts"]]
print(f"  alerts pending/firing now: {firing or 'none'}")

if empty:
    print("  empty, acceptable (series that need traffic or features this check does not produce): " + "; ".join(empty))
problems = errors + [f"{e}: empty, but every series it reads is always exported" for e in empty_required] + bad_rules
if len(loaded) < 6:
    problems.append(f"only {len(loaded)} alert rules loaded")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
PY

say "weir drains and exits 0 on SIGTERM"
kill -TERM "$weir_pid"
for _ in $(seq 1 40); do
    kill -0 "$weir_pid" 2>/dev/null || break
    sleep 0.25
done
if kill -0 "$weir_pid" 2>/dev/null; then
    fail "weir still running 10 s after SIGTERM"
fi
wait "$weir_pid" || fail "weir exited with status $? on SIGTERM"

say "deploy checks passed"
