//! The hostile trial, reproducible: `cargo bench --bench reliability`.
//!
//! weir (the release binary, its own process) in front of an in-process mock
//! LLM and an in-process faulty upstream, attacked over raw sockets. Prints
//! one table (and writes it to `target/bench-reliability.md`):
//!
//! - silent connections and slowloris heads against `header_timeout`;
//! - file-descriptor exhaustion (weir under `ulimit -n 256`) and the time
//!   until service recovers, without and with `max_connections` below it;
//! - 10x overload of a small bulkhead: shed and admitted p99, weir's CPU;
//! - a storm of 200 reloads (40 invalid) under load: failed requests;
//! - a soak of mixed traffic: RSS and fd slope per hour, usage events lost;
//! - upstream faults: resets, hangs, truncation, garbage, a 100 MB body,
//!   compressed and absurd usage.
//!
//! `WEIR_RELIABILITY_SOAK_SECS` (default 60) sets the soak; RELIABILITY.md's
//! figures use 600. Needs `sh` (for `ulimit`); nothing is installed.

#[allow(dead_code)]
#[path = "../examples/mock_llm/server.rs"]
mod mock_llm;

#[allow(dead_code)]
#[path = "proxy/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "proxy/procs.rs"]
mod procs;
#[allow(dead_code)]
#[path = "proxy/stats.rs"]
mod stats;

#[path = "reliability/faults.rs"]
mod faults;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, Instant};

use load::Conn;
use procs::{clock_ticks, cpu_ticks, free_port, rss_kib, TempDir};
use stats::Latencies;

const CHAT: &[u8] = br#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &[u8] =
    br#"{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("reliability: skipped (run it with `cargo bench --bench reliability`)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run());
    println!("{report}");
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(Path::to_path_buf))
    {
        let path = target.join("bench-reliability.md");
        if std::fs::write(&path, &report).is_ok() {
            eprintln!("report written to {}", path.display());
        }
    }
}

struct Row {
    scenario: &'static str,
    done: String,
    result: String,
}

/// weir with the trial's policy, as a child process.
struct Weir {
    proc: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
    policy: std::path::PathBuf,
    usage_log: std::path::PathBuf,
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn policy_text(
    addr: SocketAddr,
    admin: SocketAddr,
    mock: SocketAddr,
    faults: SocketAddr,
    usage_log: &Path,
    max_connections: usize,
    marker: &str,
) -> String {
    let log = usage_log.display();
    [
        format!("listen: {addr}"),
        format!("admin: {admin}"),
        format!("usage_log: {log}"),
        "shutdown: { drain_timeout: 2s }".to_owned(),
        format!("limits: {{ header_timeout: 2s, client_idle_timeout: 5s, max_connections: {max_connections} }}"),
        "upstreams:".to_owned(),
        "  llm:".to_owned(),
        "    route: /v1".to_owned(),
        format!("    url: http://{mock}/v1"),
        "    kind: openai".to_owned(),
        format!("    headers: {{ x-marker: \"{marker}\" }}"),
        "  small:".to_owned(),
        "    route: /small/v1".to_owned(),
        format!("    url: http://{mock}/v1"),
        "    kind: openai".to_owned(),
        "    retry: { attempts: 1 }".to_owned(),
        "    concurrency: { max_in_flight: 8, max_queue: 8, queue_timeout: 100ms }".to_owned(),
        "  faults:".to_owned(),
        "    route: /faults".to_owned(),
        format!("    url: http://{faults}"),
        "    kind: openai".to_owned(),
        "    retry: { attempts: 1 }".to_owned(),
        "    circuit_breaker: { consecutive_failures: 1000000, min_requests: 1000000 }".to_owned(),
        "    timeouts: { first_byte: 2s, idle: 2s, total: 30s }".to_owned(),
    ]
    .join("\n")
        + "\n"
}

async fn start_weir(
    dir: &Path,
    tag: &str,
    mock: SocketAddr,
    faults: SocketAddr,
    nofile: Option<u64>,
    max_connections: usize,
) -> Weir {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let usage_log = dir.join(format!("usage-{tag}.jsonl"));
    let policy = dir.join(format!("weir-{tag}.yaml"));
    std::fs::write(
        &policy,
        policy_text(addr, admin, mock, faults, &usage_log, max_connections, "0"),
    )
    .expect("policy");
    let log = std::fs::File::create(dir.join(format!("weir-{tag}.log"))).expect("log");
    let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    let proc = Command::new("sh")
        .arg("-c")
        .arg(format!("{limit}exec \"$0\" --config \"$1\"",))
        .arg(procs::weir_bin())
        .arg(&policy)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn weir");
    let weir = Weir {
        proc,
        addr,
        admin,
        policy,
        usage_log,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while load::get_status(admin, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "weir ({tag}) not ready");
        sleep(Duration::from_millis(20)).await;
    }
    weir
}

fn pid(weir: &Weir) -> u32 {
    weir.proc.id()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn metric(weir: &Weir, sample: &str) -> f64 {
    let text = load::get_text(weir.admin, "/metrics")
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(sample))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `n` real requests, one after another on fresh connections: (ok, p99 ms).
async fn probe(addr: SocketAddr, n: usize) -> (usize, f64) {
    let mut ok = 0;
    let mut lat = Latencies::default();
    for _ in 0..n {
        let t0 = Instant::now();
        let done = tokio::time::timeout(Duration::from_secs(3), async {
            let mut conn = Conn::open(addr).await.ok()?;
            conn.roundtrip(Method::POST, "/v1/chat/completions", CHAT)
                .await
        })
        .await;
        if matches!(done, Ok(Some(200))) {
            ok += 1;
            lat.record(nanos(t0.elapsed()));
        }
    }
    (ok, lat.ms_at(0.99))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until every stream is closed by the peer; the time it took, or
/// `None` if some are still open after `limit`.
async fn all_closed(streams: Vec<TcpStream>, limit: Duration) -> (usize, Duration) {
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in streams {
        tasks.spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
    let mut closed = 0;
    let _ = tokio::time::timeout(limit, async {
        while tasks.join_next().await.is_some() {
            closed += 1;
        }
    })
    .await;
    (closed, t0.elapsed())
}

async fn silent(weir: &Weir, rows: &mut Vec<Row>) {
    let mut held = Vec::new();
    for _ in 0..500 {
        if let Ok(s) = TcpStream::connect(weir.addr).await {
            held.push(s);
        }
    }
    let (ok, p99) = probe(weir.addr, 20).await;
    let opened = held.len();
    let (closed, took) = all_closed(held, Duration::from_secs(20)).await;
    rows.push(Row {
        scenario: "silent connections",
        done: format!("{opened} connections that never send a byte (header_timeout 2 s)"),
        result: format!("{closed}/{opened} closed by weir after {:.1} s; meanwhile {ok}/20 real requests ok, p99 {p99:.1} ms", took.as_secs_f64()),
    });
}

async fn slowloris(weir: &Weir, rows: &mut Vec<Row>) {
    let mut held = Vec::new();
    for _ in 0..500 {
        if let Ok(mut s) = TcpStream::connect(weir.addr).await {
            let _ = s
                .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
                .await;
            held.push(s);
        }
    }
    let opened = held.len();
    // Drip a header byte into each every 500 ms until weir closes them.
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in held {
        tasks.spawn(async move {
            for _ in 0..60 {
                if s.write_all(b"x").await.is_err() {
                    return true;
                }
                sleep(Duration::from_millis(500)).await;
            }
            false
        });
    }
    let (ok, p99) = probe(weir.addr, 20).await;
    let mut closed = 0;
    while let Some(Ok(cut)) = tasks.join_next().await {
        closed += usize::from(cut);
    }
    rows.push(Row {
        scenario: "slowloris",
        done: format!("{opened} heads dripping a byte every 500 ms"),
        result: format!("{closed}/{opened} cut after {:.1} s; meanwhile {ok}/20 real requests ok, p99 {p99:.1} ms", t0.elapsed().as_secs_f64()),
    });
}

/// Holds `n` silent connections against a weir limited to 256 fds; counts
/// failed probes while held and how long until a request succeeds.
async fn fd_exhaustion(
    dir: &Path,
    mock: SocketAddr,
    faults: SocketAddr,
    max_connections: usize,
    tag: &'static str,
) -> String {
    let weir = start_weir(dir, tag, mock, faults, Some(256), max_connections).await;
    let t0 = Instant::now();
    let mut held = Vec::new();
    for _ in 0..300 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(weir.addr)).await
        {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    sleep(Duration::from_millis(200)).await;
    let (ok_during, _) = probe(weir.addr, 5).await;
    // Recovery: the first real request that succeeds after the attack began.
    let recovered = loop {
        let (ok, _) = probe(weir.addr, 1).await;
        if ok == 1 {
            break Some(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            break None;
        }
    };
    let admin = load::get_status(weir.admin, "/metrics").await == Some(200);
    let accepted = held.len();
    drop(held);
    format!(
        "max_connections {max_connections}: {accepted} held; {ok_during}/5 real requests ok while held; served again after {}; admin answered: {admin}",
        recovered.map_or("> 30 s".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
    )
}

async fn overload(weir: &Weir, rows: &mut Vec<Row>) {
    let seconds = 5;
    let end = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = cpu_ticks(pid(weir));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..80 {
        let addr = weir.addr;
        tasks.spawn(async move {
            let (mut shed, mut admitted) = (Latencies::default(), Latencies::default());
            let mut errors = 0u64;
            let Ok(mut conn) = Conn::open(addr).await else {
                return (shed, admitted, 1);
            };
            while Instant::now() < end {
                let t0 = Instant::now();
                match conn
                    .roundtrip(Method::POST, "/small/v1/chat/completions", STREAM)
                    .await
                {
                    Some(200) => admitted.record(nanos(t0.elapsed())),
                    Some(503) => shed.record(nanos(t0.elapsed())),
                    Some(_) => errors += 1,
                    None => {
                        errors += 1;
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => return (shed, admitted, errors),
                        }
                    }
                }
            }
            (shed, admitted, errors)
        });
    }
    let (mut shed, mut admitted, mut errors) = (Latencies::default(), Latencies::default(), 0);
    while let Some(Ok((s, a, e))) = tasks.join_next().await {
        shed.merge(&s);
        admitted.merge(&a);
        errors += e;
    }
    let cpu = (cpu_ticks(pid(weir)) - cpu0) as f64 / clock_ticks() as f64;
    rows.push(Row {
        scenario: "10x overload",
        done: "80 closed-loop streaming clients on a bulkhead of 8 in flight + 8 queued, 5 s".to_owned(),
        result: format!(
            "{} shed (503) p99 {:.2} ms; {} admitted p99 {:.1} ms; {errors} other; weir CPU {cpu:.2} s over {seconds} s",
            shed.len(), shed.ms_at(0.99), admitted.len(), admitted.ms_at(0.99)
        ),
    });
}

async fn reload_storm(weir: &Weir, mock: SocketAddr, faults: SocketAddr, rows: &mut Vec<Row>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (addr, stop) = (weir.addr, stop.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let Ok(mut conn) = Conn::open(addr).await else {
                return (0, 1);
            };
            let body = if i % 4 == 0 { STREAM } else { CHAT };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match conn
                    .roundtrip(Method::POST, "/v1/chat/completions", body)
                    .await
                {
                    Some(200) => ok += 1,
                    Some(_) => failed += 1,
                    None => {
                        failed += 1;
                        conn = match Conn::open(addr).await {
                            Ok(c) => c,
                            Err(_) => return (ok, failed),
                        };
                    }
                }
            }
            (ok, failed)
        });
    }
    let before_ok = metric(weir, "weir_config_reloads_total{result=\"ok\"}").await;
    let before_err = metric(weir, "weir_config_reloads_total{result=\"error\"}").await;
    for n in 0..200 {
        let text = if n % 5 == 4 {
            "upstreams:\n  llm:\n    route: /v1\n    url: ftp://broken\n".to_owned()
        } else {
            policy_text(
                weir.addr,
                weir.admin,
                mock,
                faults,
                &weir.usage_log,
                10_000,
                &n.to_string(),
            )
        };
        std::fs::write(&weir.policy, text).expect("write the policy");
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(pid(weir).to_string())
            .status();
        sleep(Duration::from_millis(30)).await;
    }
    sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    while let Some(Ok((o, f))) = tasks.join_next().await {
        ok += o;
        failed += f;
    }
    let reloads_ok = metric(weir, "weir_config_reloads_total{result=\"ok\"}").await - before_ok;
    let reloads_err =
        metric(weir, "weir_config_reloads_total{result=\"error\"}").await - before_err;
    rows.push(Row {
        scenario: "reload storm",
        done: "200 rewrites + SIGHUP 30 ms apart (40 invalid) under 16 closed-loop clients".to_owned(),
        result: format!("{reloads_ok} reloads applied, {reloads_err} rejected; {ok} requests ok, {failed} failed"),
    });
}

async fn soak(weir: &Weir, seconds: u64, rows: &mut Vec<Row>) {
    let end = Instant::now() + Duration::from_secs(seconds);
    let requests_before = metric(weir, "weir_requests_total{").await;
    let lines_before = std::fs::read_to_string(&weir.usage_log).map_or(0, |t| t.lines().count());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let addr = weir.addr;
        tasks.spawn(async move {
            let mut n = 0u64;
            let mut conn = Conn::open(addr).await.ok();
            while Instant::now() < end {
                let (path, body) = match i % 6 {
                    0 => ("/v1/chat/completions", STREAM),
                    1 => ("/faults/reset/v1/chat/completions", CHAT),
                    2 => ("/faults/gzip/v1/chat/completions", CHAT),
                    _ => ("/v1/chat/completions", CHAT),
                };
                let Some(c) = conn.as_mut() else {
                    conn = Conn::open(addr).await.ok();
                    sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if c.roundtrip(Method::POST, path, body).await.is_none() {
                    conn = None;
                }
                n += 1;
                if i % 6 == 1 {
                    sleep(Duration::from_millis(50)).await;
                }
            }
            n
        });
    }
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let t0 = Instant::now();
    while Instant::now() < end {
        let p = pid(weir);
        samples.push((
            t0.elapsed().as_secs_f64(),
            rss_kib(p) as f64 / 1024.0,
            fds(p) as f64,
        ));
        sleep(Duration::from_secs(5).min(end.saturating_duration_since(Instant::now()))).await;
    }
    let mut total = 0;
    while let Some(Ok(n)) = tasks.join_next().await {
        total += n;
    }
    sleep(Duration::from_secs(2)).await; // the usage log flushes every second
    let answered = metric(weir, "weir_requests_total{").await - requests_before;
    let lines =
        std::fs::read_to_string(&weir.usage_log).map_or(0, |t| t.lines().count()) - lines_before;
    let dropped = metric(weir, "weir_usage_events_dropped_total").await;
    // Slope over the second half (after warm-up), per hour.
    let half: Vec<_> = samples.iter().skip(samples.len() / 2).copied().collect();
    let slope = |pick: fn(&(f64, f64, f64)) -> f64| {
        let n = half.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let mx = half.iter().map(|s| s.0).sum::<f64>() / n;
        let my = half.iter().map(pick).sum::<f64>() / n;
        let cov: f64 = half.iter().map(|s| (s.0 - mx) * (pick(s) - my)).sum();
        let var: f64 = half.iter().map(|s| (s.0 - mx).powi(2)).sum();
        cov / var * 3600.0
    };
    let (first, last) = (
        samples.first().copied().unwrap_or_default(),
        samples.last().copied().unwrap_or_default(),
    );
    rows.push(Row {
        scenario: "soak",
        done: format!("{seconds} s of mixed traffic (chat, streams, resets, gzip), 12 clients"),
        result: format!(
            "{total} requests; RSS {:.1} -> {:.1} MiB ({:+.1} MiB/h over the second half); fds {} -> {} ({:+.0}/h); usage events: {answered} requests counted by weir, {lines} logged, {} lost, {dropped} dropped",
            first.1,
            last.1,
            slope(|s| s.1),
            first.2,
            last.2,
            slope(|s| s.2),
            (answered - lines as f64).max(0.0)
        ),
    });
}

async fn upstream_faults(weir: &Weir, rows: &mut Vec<Row>) {
    for fault in ["reset", "hang", "truncate", "garbage"] {
        let mut statuses = std::collections::BTreeMap::<String, usize>::new();
        let t0 = Instant::now();
        for _ in 0..10 {
            let got = tokio::time::timeout(Duration::from_secs(10), async {
                let mut c = Conn::open(weir.addr).await.ok()?;
                c.roundtrip(
                    Method::POST,
                    &format!("/faults/{fault}/v1/chat/completions"),
                    CHAT,
                )
                .await
            })
            .await;
            let key = match got {
                Ok(Some(s)) => s.to_string(),
                Ok(None) => "cut".to_owned(),
                Err(_) => "hung".to_owned(),
            };
            *statuses.entry(key).or_default() += 1;
        }
        rows.push(Row {
            scenario: "upstream fault",
            done: format!("{fault}: 10 requests"),
            result: format!(
                "{statuses:?} in {:.1} s; weir ready: {}",
                t0.elapsed().as_secs_f64(),
                load::get_status(weir.admin, "/readyz").await == Some(200)
            ),
        });
    }
    // 100 MB through, read slowly by nobody: RSS stays bounded.
    let p = pid(weir);
    let rss0 = rss_kib(p);
    let mut peak = rss0;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(weir.addr).await.expect("connect");
    s.write_all(b"GET /faults/big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got += n,
        }
        if got % (8 << 20) < 65536 {
            peak = peak.max(rss_kib(p));
        }
    }
    rows.push(Row {
        scenario: "upstream fault",
        done: "a 100 MB answer".to_owned(),
        result: format!(
            "{:.0} MB through in {:.1} s; weir RSS {:.1} -> peak {:.1} MiB",
            got as f64 / 1e6,
            t0.elapsed().as_secs_f64(),
            rss0 as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
    });
    for (fault, what) in [
        ("gzip", "gzip-compressed usage (12 + 34 tokens)"),
        ("absurd", "usage of 18446744073709551615 tokens"),
    ] {
        let prompt =
            "weir_tokens_total{model=\"m\",tenant=\"unknown\",type=\"prompt\",upstream=\"faults\"}";
        let missing = "weir_usage_missing_total{upstream=\"faults\"}";
        let (t0, m0) = (metric(weir, prompt).await, metric(weir, missing).await);
        for _ in 0..10 {
            let mut c = Conn::open(weir.addr).await.expect("connect");
            c.roundtrip(
                Method::POST,
                &format!("/faults/{fault}/v1/chat/completions"),
                CHAT,
            )
            .await;
        }
        sleep(Duration::from_millis(200)).await;
        let (t1, m1) = (metric(weir, prompt).await, metric(weir, missing).await);
        rows.push(Row {
            scenario: "upstream fault",
            done: format!("{what}: 10 answers"),
            result: format!(
                "prompt tokens counted +{}, answers with usage missing +{}",
                t1 - t0,
                m1 - m0
            ),
        });
    }
}

async fn run() -> String {
    let dir = TempDir::new();
    let mock_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mock = mock_listener.local_addr().expect("addr");
    tokio::spawn(mock_llm::serve(
        mock_listener,
        mock_llm::MockConfig {
            latency: Duration::from_millis(5),
            chunk_delay: Duration::from_millis(2),
            chunks: 8,
            model: "mock-gpt".to_owned(),
        },
    ));
    let faults = faults::start().await;
    let soak_secs: u64 = std::env::var("WEIR_RELIABILITY_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut rows = Vec::new();

    let weir = start_weir(&dir.0, "main", mock, faults, None, 10_000).await;
    eprintln!("reliability: silent connections");
    silent(&weir, &mut rows).await;
    eprintln!("reliability: slowloris");
    slowloris(&weir, &mut rows).await;
    eprintln!("reliability: fd exhaustion");
    for (max, tag) in [(10_000, "fd-default"), (200, "fd-capped")] {
        let result = fd_exhaustion(&dir.0, mock, faults, max, tag).await;
        rows.push(Row {
            scenario: "fd exhaustion",
            done: "weir under ulimit -n 256, 300 silent connections opened (the kernel's backlog holds what weir cannot accept)".to_owned(),
            result,
        });
    }
    eprintln!("reliability: overload");
    overload(&weir, &mut rows).await;
    eprintln!("reliability: upstream faults");
    upstream_faults(&weir, &mut rows).await;
    eprintln!("reliability: reload storm");
    reload_storm(&weir, mock, faults, &mut rows).await;
    eprintln!("reliability: soak ({soak_secs} s)");
    soak(&weir, soak_secs, &mut rows).await;

    let mut out = String::new();
    let _ = writeln!(out, "# weir reliability trial\n");
    let _ = writeln!(
        out,
        "- command: `cargo bench --bench reliability` (soak {soak_secs} s)"
    );
    let _ = writeln!(
        out,
        "- weir: {}; machine: {} CPUs\n",
        procs::weir_bin(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(out, "| scenario | what was done | result |\n|---|---|---|");
    for row in rows {
        let _ = writeln!(out, "| {} | {} | {} |", row.scenario, row.done, row.result);
    }
    out
}
