//! End-to-end benchmark of weir as a reverse proxy (issue #6).
//!
//! `cargo bench --bench proxy` measures, in one run on one machine, against
//! the same fast mock upstream (examples/mock_llm, in its own process):
//!
//! - direct to the upstream (the limit), through weir (the release binary, in
//!   its own process) and through nginx (a tuned keep-alive reverse proxy,
//!   when `/usr/sbin/nginx` exists; the column is skipped otherwise);
//! - small non-streamed chat completions at 1, 16 and 64 concurrent
//!   keep-alive connections (closed loop): requests per second, p50/p99/p99.9
//!   latency and their ratio to direct, CPU time per 1,000 requests;
//! - streamed completions (16 concurrent): time to first token and time
//!   between tokens, and what the proxy adds to them;
//! - weir's memory: RSS idle, with 1,000 and 10,000 idle client connections,
//!   and with 1,000 concurrent slow streams.
//!
//! Runs are interleaved (direct, weir, nginx; again for each round) so noise
//! from other work on the machine hits every path alike; each reported
//! number is the median over the rounds. The report (Markdown) is printed and
//! written to `target/bench-proxy.md`.
//!
//! Environment: `WEIR_BENCH_SECONDS` (measured seconds per run, default 3),
//! `WEIR_BENCH_ROUNDS` (default 3), `WEIR_BENCH_CONNS` (default `1,16,64`),
//! `WEIR_BENCH_UPSTREAM_THREADS` (the mock's tokio workers, default 1),
//! `WEIR_BENCH_IDLE_CONNS` (default 10000), `WEIR_BENCH_WEIR_BIN` (another
//! weir binary to measure instead of the one cargo built, for A/B runs),
//! `WEIR_BENCH_WEIR_THREADS` (weir's tokio workers; default: one per CPU),
//! `WEIR_BENCH_KEEP` (keep the temp dir with policies and logs).

#[allow(dead_code)]
#[path = "../examples/mock_llm/server.rs"]
mod mock_llm;

#[path = "proxy/load.rs"]
mod load;
#[path = "proxy/procs.rs"]
mod procs;
#[path = "proxy/stats.rs"]
mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{sleep, sleep_until, Instant};

use load::Window;
use procs::{cpu_ticks, machine_busy_ticks, rss_kib};
use stats::{fixed, median, signed_ms, thousands};

/// Chat completions path, the same on every side (weir's route `/v1` maps to the upstream's `/v1`).
const CHAT_PATH: &str = "/v1/chat/completions";
const SLOW_PATH: &str = "/slow/v1/chat/completions";
/// The fast upstream's streams: 16 tokens, 5 ms apart (the mock sleeps on
/// tokio's 1 ms timer, so gaps are 5-6 ms).
const STREAM_CHUNKS: usize = 16;
const STREAM_DELAY: Duration = Duration::from_millis(5);
const STREAM_CONNS: usize = 16;
/// Slow streams for the memory run: a token every 500 ms, 240 of them (2 min,
/// far longer than the run needs; the mock builds every event up front, so
/// not many more).
const SLOW_DELAY: Duration = Duration::from_millis(500);
const SLOW_CHUNKS: usize = 240;
const SLOW_STREAMS: usize = 1_000;
const WARMUP: Duration = Duration::from_millis(500);

fn main() {
    if std::env::var("WEIR_BENCH_ROLE").as_deref() == Ok("upstream") {
        upstream_main();
        return;
    }
    // `cargo test --benches` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("proxy: skipped (run it with `cargo bench --bench proxy`)");
        return;
    }
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the load generator's runtime");
    let report = runtime.block_on(run(settings));
    println!("{report}");
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/proxy-<hash>
    if let Some(target) = exe.ancestors().nth(3) {
        let path = target.join("bench-proxy.md");
        match std::fs::write(&path, &report) {
            Ok(()) => eprintln!("report written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}

/// The mock upstream, when this binary is re-executed as a child process.
/// Prints its port, serves until its stdin closes (the bench exited).
fn upstream_main() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let config = mock_llm::MockConfig {
        latency: Duration::ZERO,
        chunk_delay: Duration::from_micros(env("WEIR_BENCH_CHUNK_DELAY_US", 0)),
        chunks: usize::try_from(env("WEIR_BENCH_CHUNKS", 8)).expect("chunks"),
        model: "mock-gpt".to_owned(),
    };
    let threads = usize::try_from(env("WEIR_BENCH_UPSTREAM_THREADS", 1)).expect("threads");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("build the upstream's runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let port = listener.local_addr().expect("local_addr").port();
        tokio::spawn(mock_llm::serve(listener, config));
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{port}").expect("print the port");
            out.flush().expect("flush");
        }
        let _ = tokio::task::spawn_blocking(|| {
            use std::io::Read;
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
    });
    std::process::exit(0);
}

struct Settings {
    seconds: f64,
    rounds: usize,
    conns: Vec<usize>,
    upstream_threads: usize,
    idle_conns: usize,
}

impl Settings {
    fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
                Err(_) => default,
            }
        }
        let conns = std::env::var("WEIR_BENCH_CONNS").unwrap_or_else(|_| "1,16,64".to_owned());
        let conns = conns
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .expect("WEIR_BENCH_CONNS: numbers, comma-separated")
            })
            .collect();
        Self {
            seconds: var("WEIR_BENCH_SECONDS", 3.0_f64).max(0.2),
            rounds: var("WEIR_BENCH_ROUNDS", 3_usize).max(1),
            conns,
            upstream_threads: var("WEIR_BENCH_UPSTREAM_THREADS", 1_usize).max(1),
            idle_conns: var("WEIR_BENCH_IDLE_CONNS", 10_000_usize),
        }
    }

    fn measured(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    /// The command as run, with the overrides in force.
    fn command() -> String {
        let mut cmd = String::new();
        for name in [
            "WEIR_BENCH_SECONDS",
            "WEIR_BENCH_ROUNDS",
            "WEIR_BENCH_CONNS",
            "WEIR_BENCH_UPSTREAM_THREADS",
            "WEIR_BENCH_IDLE_CONNS",
            "WEIR_BENCH_WEIR_BIN",
            "WEIR_BENCH_WEIR_THREADS",
        ] {
            if let Ok(v) = std::env::var(name) {
                let _ = write!(cmd, "{name}={v} ");
            }
        }
        cmd + "cargo bench --bench proxy"
    }
}

/// One side of the comparison.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Path {
    Direct,
    Weir,
    Nginx,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Weir => "weir",
            Path::Nginx => "nginx",
        }
    }
}

/// CPU counters sampled at the edges of a measurement window.
struct CpuSample {
    proxy: u64,
    upstream: u64,
    client: u64,
    machine: u64,
}

/// The processes of the bench, for CPU accounting.
struct Pids {
    upstream: u32,
    weir: u32,
    nginx: Vec<u32>,
    me: u32,
}

impl Pids {
    fn sample(&self, path: Path) -> CpuSample {
        let proxy = match path {
            Path::Direct => 0,
            Path::Weir => cpu_ticks(self.weir),
            Path::Nginx => self.nginx.iter().map(|&p| cpu_ticks(p)).sum(),
        };
        CpuSample {
            proxy,
            upstream: cpu_ticks(self.upstream),
            client: cpu_ticks(self.me),
            machine: machine_busy_ticks(),
        }
    }

    /// Ticks of every process of the bench (the idle ones count too, should they wake).
    fn all(&self) -> u64 {
        cpu_ticks(self.upstream)
            + cpu_ticks(self.weir)
            + self.nginx.iter().map(|&p| cpu_ticks(p)).sum::<u64>()
            + cpu_ticks(self.me)
    }
}

/// One non-streamed run's results.
struct LoadRun {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    /// CPU milliseconds per 1,000 requests.
    cpu_proxy: f64,
    cpu_upstream: f64,
    cpu_client: f64,
    errors: u64,
    /// Share of the machine's CPU used by processes outside the bench, in %.
    foreign: f64,
}

struct StreamRun {
    ttft50: f64,
    ttft99: f64,
    tbt50: f64,
    tbt99: f64,
    total50: f64,
    streams: usize,
    errors: u64,
    foreign: f64,
}

struct Ctx {
    clk: f64,
    ncpu: f64,
    pids: Pids,
    /// Ticks of the bench's own processes at the start of the window.
    own_before: u64,
}

impl Ctx {
    /// The share of the machine other processes used during a window, in %.
    #[allow(clippy::cast_precision_loss)]
    fn foreign(&self, before: &CpuSample, after: &CpuSample, secs: f64) -> f64 {
        let own = self.pids.all().saturating_sub(self.own_before) as f64;
        let machine = after.machine.saturating_sub(before.machine) as f64;
        ((machine - own) / (self.clk * self.ncpu * secs) * 100.0).max(0.0)
    }

    #[allow(clippy::cast_precision_loss)]
    fn per_1k(&self, ticks: u64, requests: usize) -> f64 {
        if requests == 0 {
            return f64::NAN;
        }
        ticks as f64 / self.clk * 1000.0 / requests as f64 * 1000.0
    }
}

/// Runs the load `start` makes over a measured window after the warm-up,
/// sampling CPU at the window's edges; returns the load's result, the two
/// samples and the share of the machine used by processes outside the bench.
async fn measure<T, F>(
    ctx: &mut Ctx,
    path: Path,
    measured: Duration,
    start: impl FnOnce(Window) -> F,
) -> (T, CpuSample, CpuSample, f64)
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let begin = Instant::now() + WARMUP;
    let w = Window {
        start: begin,
        end: begin + measured,
    };
    let task = tokio::spawn(start(w));
    sleep_until(w.start).await;
    ctx.own_before = ctx.pids.all();
    let before = ctx.pids.sample(path);
    sleep_until(w.end).await;
    let after = ctx.pids.sample(path);
    let foreign = ctx.foreign(&before, &after, measured.as_secs_f64());
    let result = task.await.expect("load task");
    (result, before, after, foreign)
}

#[allow(clippy::cast_precision_loss)]
async fn load_run(
    ctx: &mut Ctx,
    path: Path,
    addr: SocketAddr,
    conns: usize,
    measured: Duration,
) -> LoadRun {
    let (result, before, after, foreign) = measure(ctx, path, measured, |w| {
        load::closed_loop(addr, CHAT_PATH, conns, w)
    })
    .await;
    let n = result.latencies.len();
    let pct = |q| result.latencies.ms_at(q);
    LoadRun {
        rps: n as f64 / measured.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        cpu_proxy: if path == Path::Direct {
            f64::NAN
        } else {
            ctx.per_1k(after.proxy - before.proxy, n)
        },
        cpu_upstream: ctx.per_1k(after.upstream - before.upstream, n),
        cpu_client: ctx.per_1k(after.client - before.client, n),
        errors: result.errors,
        foreign,
    }
}

async fn stream_run(ctx: &mut Ctx, path: Path, addr: SocketAddr, measured: Duration) -> StreamRun {
    let (r, _, _, foreign) = measure(ctx, path, measured, |w| {
        load::streams(addr, CHAT_PATH, STREAM_CONNS, w)
    })
    .await;
    StreamRun {
        ttft50: r.ttft.ms_at(0.5),
        ttft99: r.ttft.ms_at(0.99),
        tbt50: r.tbt.ms_at(0.5),
        tbt99: r.tbt.ms_at(0.99),
        total50: r.total.ms_at(0.5),
        streams: r.ttft.len(),
        errors: r.errors,
        foreign,
    }
}

/// weir's memory (and nginx's, for scale), in KiB of RSS.
struct Memory {
    /// A fresh weir, before any request.
    idle_start: u64,
    weir_idle: Idle,
    nginx_idle: Option<Idle>,
    before_streams: u64,
    streams: (usize, u64),
    /// After the throughput runs, on the weir that served them.
    idle_after_load: u64,
}

/// RSS of a server's processes before and with idle client connections.
struct Idle {
    before: u64,
    /// (connections open, RSS) at each step.
    steps: Vec<(usize, u64)>,
    after_close: u64,
    /// RSS a minute after they all closed.
    a_minute_later: u64,
}

impl Idle {
    /// KiB per connection at the largest step.
    #[allow(clippy::cast_precision_loss)]
    fn per_conn(&self) -> f64 {
        self.steps.last().map_or(f64::NAN, |&(n, rss)| {
            (rss as f64 - self.before as f64) / n as f64
        })
    }
}

fn rss_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// RSS once allocations and frees in flight have settled.
async fn settle_rss(pids: &[u32]) -> u64 {
    sleep(Duration::from_millis(700)).await;
    rss_of(pids)
}

/// Opens idle keep-alive connections up to each of `sizes` in turn (each
/// after one request), measuring RSS at each step, then closes them all.
async fn idle_steps(addr: SocketAddr, pids: &[u32], sizes: &[usize]) -> Idle {
    let before = settle_rss(pids).await;
    let mut conns = Vec::new();
    let mut steps = Vec::new();
    for &n in sizes {
        eprintln!("memory: {n} idle connections");
        let more = n - conns.len();
        conns.extend(load::open_idle(addr, CHAT_PATH, more, 32).await);
        steps.push((n, settle_rss(pids).await));
    }
    drop(conns);
    let after_close = settle_rss(pids).await;
    // What the allocator gives back given time (issue 14: within a minute).
    sleep(Duration::from_secs(60)).await;
    let a_minute_later = rss_of(pids);
    Idle {
        before,
        steps,
        a_minute_later,
        after_close,
    }
}

/// Starts a fresh weir and sends it one request, so the route, pool and
/// metrics exist before a baseline is taken. Returns it with its RSS just
/// started.
async fn fresh_weir(
    dir: &std::path::Path,
    tag: &str,
    fast: SocketAddr,
    slow: SocketAddr,
) -> (procs::Weir, u64) {
    let weir = procs::spawn_weir(dir, tag, fast, slow).await;
    let started = settle_rss(&[weir.proc.pid()]).await;
    let mut conn = load::Conn::open(weir.addr).await.expect("connect to weir");
    let status = conn
        .roundtrip(hyper::Method::POST, CHAT_PATH, load::CHAT)
        .await;
    assert_eq!(status, Some(200), "first request through weir");
    (weir, started)
}

/// Idle connections and slow streams, each on a weir process of its own (so
/// memory freed by one is not reused by the other); idle connections to
/// nginx too, for scale.
async fn memory_runs(
    dir: &std::path::Path,
    fast: SocketAddr,
    slow: SocketAddr,
    nginx: Option<&procs::Nginx>,
    nofile: u64,
    idle_conns: usize,
) -> Memory {
    // Both sides of a connection are in processes with this limit: keep 500 spare.
    let fit = usize::try_from(nofile.saturating_sub(500)).unwrap_or(usize::MAX);
    let large = idle_conns.min(fit);
    let mut sizes = vec![1_000.min(large)];
    if large > sizes[0] {
        sizes.push(large);
    }

    let (weir, idle_start) = fresh_weir(dir, "idle", fast, slow).await;
    let weir_idle = idle_steps(weir.addr, &[weir.proc.pid()], &sizes).await;
    drop(weir);
    let nginx_idle = match nginx {
        Some(n) => Some(idle_steps(n.addr, &n.pids, &sizes).await),
        None => None,
    };

    let (weir, _) = fresh_weir(dir, "streams", fast, slow).await;
    let pid = [weir.proc.pid()];
    let before_streams = settle_rss(&pid).await;
    eprintln!("memory: {SLOW_STREAMS} slow streams");
    let mut streams = load::open_streams(weir.addr, SLOW_PATH, SLOW_STREAMS, 32).await;
    let with_streams = settle_rss(&pid).await;
    streams.shutdown().await;
    Memory {
        idle_start,
        weir_idle,
        nginx_idle,
        before_streams,
        streams: (SLOW_STREAMS, with_streams),
        idle_after_load: 0,
    }
}

async fn run(settings: Settings) -> String {
    let nofile = procs::raise_nofile(30_000);
    let clk = procs::clock_ticks();
    let ncpu = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = procs::TempDir::new();
    let measured = settings.measured();

    let fast = procs::spawn_upstream(STREAM_DELAY, STREAM_CHUNKS, settings.upstream_threads);
    let slow = procs::spawn_upstream(SLOW_DELAY, SLOW_CHUNKS, 1);
    let nginx = procs::spawn_nginx(&dir.0, fast.addr).await;
    if nginx.is_none() {
        eprintln!("nginx not found at {}: its column is skipped", procs::NGINX);
    }

    // Memory first, on weirs of their own that serve nothing else.
    let mut memory = memory_runs(
        &dir.0,
        fast.addr,
        slow.addr,
        nginx.as_ref(),
        nofile,
        settings.idle_conns,
    )
    .await;

    let mut weir = procs::spawn_weir(&dir.0, "load", fast.addr, slow.addr).await;
    let mut ctx = Ctx {
        clk: clk as f64,
        ncpu: ncpu as f64,
        pids: Pids {
            upstream: fast.proc.pid(),
            weir: weir.proc.pid(),
            nginx: nginx.as_ref().map(|n| n.pids.clone()).unwrap_or_default(),
            me: std::process::id(),
        },
        own_before: 0,
    };
    let mut paths = vec![(Path::Direct, fast.addr), (Path::Weir, weir.addr)];
    if let Some(n) = &nginx {
        paths.push((Path::Nginx, n.addr));
    }

    let mut loads: BTreeMap<(usize, Path), Vec<LoadRun>> = BTreeMap::new();
    let mut streams: BTreeMap<Path, Vec<StreamRun>> = BTreeMap::new();
    for round in 1..=settings.rounds {
        for &conns in &settings.conns {
            for &(path, addr) in &paths {
                eprintln!(
                    "round {round}/{}: {conns} connections, {}",
                    settings.rounds,
                    path.name()
                );
                let r = load_run(&mut ctx, path, addr, conns, measured).await;
                loads.entry((conns, path)).or_default().push(r);
            }
        }
        for &(path, addr) in &paths {
            eprintln!(
                "round {round}/{}: streams, {}",
                settings.rounds,
                path.name()
            );
            let r = stream_run(&mut ctx, path, addr, measured).await;
            streams.entry(path).or_default().push(r);
        }
        weir.proc.assert_running();
    }
    memory.idle_after_load = settle_rss(&[weir.proc.pid()]).await;
    let opened = upstream_connections_opened(weir.admin).await;

    let machine = Machine::probe(ncpu, nofile, clk);
    report(
        &settings,
        &machine,
        nginx.is_some(),
        &loads,
        &streams,
        &memory,
        opened,
    )
}

/// `weir_upstream_connections_opened_total` of the `mock` upstream, from weir's metrics.
async fn upstream_connections_opened(admin: SocketAddr) -> Option<f64> {
    let text = load::get_text(admin, "/metrics").await?;
    text.lines()
        .filter(|l| l.starts_with("weir_upstream_connections_opened_total"))
        .find(|l| l.contains("upstream=\"mock\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Machine {
    date: String,
    ncpu: usize,
    cpu: String,
    kernel: String,
    nginx: String,
    nofile: u64,
    clk: u64,
    loadavg: String,
}

impl Machine {
    fn probe(ncpu: usize, nofile: u64, clk: u64) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "?".to_owned());
        let nginx = std::process::Command::new(procs::NGINX)
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stderr).ok())
            .map(|s| s.trim().trim_start_matches("nginx version: ").to_owned())
            .unwrap_or_else(|| "not installed".to_owned());
        Self {
            date: procs::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            ncpu,
            cpu,
            kernel: procs::command_line("uname", &["-sr"]),
            nginx,
            nofile,
            clk,
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

fn med<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn ratio(x: f64, base: f64) -> String {
    if x.is_finite() && base.is_finite() && base > 0.0 {
        format!("{:.2}×", x / base)
    } else {
        "—".to_owned()
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn report(
    settings: &Settings,
    m: &Machine,
    have_nginx: bool,
    loads: &BTreeMap<(usize, Path), Vec<LoadRun>>,
    streams: &BTreeMap<Path, Vec<StreamRun>>,
    mem: &Memory,
    opened: Option<f64>,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# weir proxy benchmark\n");
    let _ = writeln!(o, "- command: `{}`", Settings::command());
    let _ = writeln!(o, "- date: {}", m.date);
    let _ = writeln!(
        o,
        "- machine: {} CPUs (`nproc`), {}, {}; load average at the end {}",
        m.ncpu, m.cpu, m.kernel, m.loadavg
    );
    let _ = writeln!(
        o,
        "- weir: `{}`; nginx: {}; RLIMIT_NOFILE {}; CLK_TCK {}",
        procs::weir_bin(),
        m.nginx,
        m.nofile,
        m.clk
    );
    let _ = writeln!(
        o,
        "- setup: all on this machine, sharing its {} CPUs, nothing pinned: the mock upstream \
         (examples/mock_llm, own process, {} tokio worker(s)), weir (release binary, own process, \
         default runtime: one worker per CPU, `RUST_LOG=warn`), nginx (master + `worker_processes auto`, \
         upstream `keepalive 128`, `proxy_buffering off`, no access log), and the load generator \
         (this process: hyper HTTP/1.1, one keep-alive connection per client, closed loop).",
        m.ncpu, settings.upstream_threads
    );
    let _ = writeln!(
        o,
        "- runs: {} rounds, each running direct, weir, nginx back to back ({:.1} s measured after \
         {:.1} s warm-up, fresh client connections per run); every number is the median over the rounds.\n",
        settings.rounds,
        settings.seconds,
        WARMUP.as_secs_f64()
    );

    // Non-streamed.
    let _ = writeln!(
        o,
        "## Non-streamed chat completions\n\n\
         Closed loop: each connection sends its next request when the previous answer is read. \
         Ratios are to direct. CPU is user + system time of the proxy's processes (weir; nginx's \
         master and workers) per 1,000 requests; the upstream's and the load generator's are \
         shown for scale.\n"
    );
    let _ = writeln!(
        o,
        "| conns | path | req/s | p50 ms | p99 ms | p99.9 ms | added p99 ms | CPU ms / 1k req: proxy · upstream · client | req/s per round | errors |"
    );
    let _ = writeln!(o, "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for &conns in &settings.conns {
        let Some(direct) = loads.get(&(conns, Path::Direct)) else {
            continue;
        };
        let (d_rps, d50, d99, d999) = (
            med(direct, |r| r.rps),
            med(direct, |r| r.p50),
            med(direct, |r| r.p99),
            med(direct, |r| r.p999),
        );
        for path in [Path::Direct, Path::Weir, Path::Nginx] {
            let Some(runs) = loads.get(&(conns, path)) else {
                continue;
            };
            let (rps, p50, p99, p999) = (
                med(runs, |r| r.rps),
                med(runs, |r| r.p50),
                med(runs, |r| r.p99),
                med(runs, |r| r.p999),
            );
            let cell = |x: f64, base: f64, dec: usize| {
                if path == Path::Direct {
                    fixed(x, dec)
                } else {
                    format!("{} ({})", fixed(x, dec), ratio(x, base))
                }
            };
            let rps_cell = if path == Path::Direct {
                thousands(rps)
            } else {
                format!("{} ({})", thousands(rps), ratio(rps, d_rps))
            };
            let added = if path == Path::Direct {
                "—".to_owned()
            } else {
                signed_ms(p99 - d99)
            };
            let per_round = runs
                .iter()
                .map(|r| thousands(r.rps))
                .collect::<Vec<_>>()
                .join(" · ");
            let _ = writeln!(
                o,
                "| {conns} | {} | {rps_cell} | {} | {} | {} | {added} | {} · {} · {} | {per_round} | {} |",
                path.name(),
                cell(p50, d50, 3),
                cell(p99, d99, 3),
                cell(p999, d999, 3),
                fixed(med(runs, |r| r.cpu_proxy), 0),
                fixed(med(runs, |r| r.cpu_upstream), 0),
                fixed(med(runs, |r| r.cpu_client), 0),
                runs.iter().map(|r| r.errors).sum::<u64>(),
            );
        }
    }
    if let Some(n) = opened {
        let _ = writeln!(
            o,
            "\nweir opened {} upstream connections over all its runs (pool `max_idle: 128`; \
             at most 64 requests in flight).",
            thousands(n)
        );
    }
    if !have_nginx {
        let _ = writeln!(
            o,
            "\nnginx was not found at `{}`: its rows are missing (`apt-get install nginx` to add them).",
            procs::NGINX
        );
    }

    // Streams.
    let _ = writeln!(
        o,
        "\n## Streamed chat completions\n\n\
         {STREAM_CONNS} concurrent streams, one after another on each connection; the upstream sends \
         {STREAM_CHUNKS} content events {} ms apart. TTFT: request sent to first content event \
         received. TBT: gap between consecutive content events. Added: the path's median minus \
         direct's (weir injects `stream_options.include_usage` and strips the usage event, as configured by default).\n",
        STREAM_DELAY.as_millis()
    );
    let _ = writeln!(
        o,
        "| path | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | TBT p50 ms | TBT p99 ms | added TBT p50 ms | whole stream p50 ms | streams | errors |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let direct_streams = streams.get(&Path::Direct);
    let (d_ttft, d_tbt) = direct_streams.map_or((f64::NAN, f64::NAN), |d| {
        (med(d, |r| r.ttft50), med(d, |r| r.tbt50))
    });
    for (path, runs) in streams {
        let added = |x: f64, base: f64| {
            if *path == Path::Direct {
                "—".to_owned()
            } else {
                signed_ms(x - base)
            }
        };
        let (ttft, tbt) = (med(runs, |r| r.ttft50), med(runs, |r| r.tbt50));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            path.name(),
            fixed(ttft, 3),
            fixed(med(runs, |r| r.ttft99), 3),
            added(ttft, d_ttft),
            fixed(tbt, 3),
            fixed(med(runs, |r| r.tbt99), 3),
            added(tbt, d_tbt),
            fixed(med(runs, |r| r.total50), 2),
            runs.iter().map(|r| r.streams).sum::<usize>(),
            runs.iter().map(|r| r.errors).sum::<u64>(),
        );
    }

    // Memory.
    let mib = |kib: u64| kib as f64 / 1024.0;
    let per = |with: u64, base: u64, n: usize| (with as f64 - base as f64) / n as f64;
    let _ = writeln!(
        o,
        "\n## Memory (RSS)\n\n\
         Fresh weir processes (one for the idle connections, another for the streams), each \
         measured after one first request; nginx (master + workers, summed) for scale. Idle \
         client connections are keep-alive connections that each carried one request and then \
         stay open; slow streams are streamed completions receiving a token every {} ms. Per \
         connection: RSS growth over the state before them, divided by their number.\n",
        SLOW_DELAY.as_millis()
    );
    let _ = writeln!(
        o,
        "| state | weir RSS MiB | weir KiB per connection | nginx RSS MiB | nginx KiB per connection |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| idle, just started | {:.1} | | | |",
        mib(mem.idle_start)
    );
    let ng = mem.nginx_idle.as_ref();
    let cell = |idle: Option<&Idle>, f: &dyn Fn(&Idle) -> (String, String)| {
        idle.map_or_else(|| ("—".to_owned(), "—".to_owned()), f)
    };
    let (nb, _) = cell(ng, &|i| (format!("{:.1}", mib(i.before)), String::new()));
    let _ = writeln!(
        o,
        "| idle, after one request | {:.1} | | {nb} | |",
        mib(mem.weir_idle.before)
    );
    for (k, &(n, rss)) in mem.weir_idle.steps.iter().enumerate() {
        let (nr, np) = cell(ng, &|i| {
            i.steps.get(k).map_or_else(
                || ("—".to_owned(), "—".to_owned()),
                |&(nn, r)| {
                    (
                        format!("{:.1}", mib(r)),
                        format!("{:.1}", per(r, i.before, nn)),
                    )
                },
            )
        });
        let _ = writeln!(
            o,
            "| {} idle client connections | {:.1} | {:.1} | {nr} | {np} |",
            thousands(n as f64),
            mib(rss),
            per(rss, mem.weir_idle.before, n)
        );
    }
    let (nc, _) = cell(ng, &|i| {
        (format!("{:.1}", mib(i.after_close)), String::new())
    });
    let _ = writeln!(
        o,
        "| all closed again | {:.1} | | {nc} | |",
        mib(mem.weir_idle.after_close)
    );
    let (nm, _) = cell(ng, &|i| {
        (format!("{:.1}", mib(i.a_minute_later)), String::new())
    });
    let _ = writeln!(
        o,
        "| a minute after they closed | {:.1} | | {nm} | |",
        mib(mem.weir_idle.a_minute_later)
    );
    let (n, rss) = mem.streams;
    let _ = writeln!(
        o,
        "| {} concurrent slow streams | {:.1} | {:.1} | | |",
        thousands(n as f64),
        mib(rss),
        per(rss, mem.before_streams, n)
    );
    let _ = writeln!(
        o,
        "| idle after all the throughput and stream runs (the weir that served them) | {:.1} | | | |",
        mib(mem.idle_after_load)
    );
    let per_idle = mem.weir_idle.per_conn();
    if mem.weir_idle.steps.len() < 2 {
        let _ = writeln!(
            o,
            "\nOnly {} idle connections: RLIMIT_NOFILE ({}) or `WEIR_BENCH_IDLE_CONNS` kept it there.",
            mem.weir_idle.steps.last().map_or(0, |s| s.0),
            m.nofile
        );
    }

    // Targets.
    let _ = writeln!(o, "\n## Targets\n");
    let _ = writeln!(o, "| target | measured | verdict |");
    let _ = writeln!(o, "|---|---|---|");
    for &conns in &settings.conns {
        if conns < 16 {
            continue;
        }
        let (Some(w), Some(n)) = (
            loads.get(&(conns, Path::Weir)),
            loads.get(&(conns, Path::Nginx)),
        ) else {
            continue;
        };
        let r = med(w, |r| r.rps) / med(n, |r| r.rps);
        let _ = writeln!(
            o,
            "| throughput through weir ≥ 90 % of nginx's, {conns} conns | {:.0} % | {} |",
            r * 100.0,
            verdict(r >= 0.9)
        );
    }
    // Context for the throughput rows: on a shared 2-CPU machine req/s swings
    // with scheduling; CPU per request is the steadier measure of the cost.
    for &conns in &settings.conns {
        if let (Some(w), Some(n)) = (
            loads.get(&(conns, Path::Weir)),
            loads.get(&(conns, Path::Nginx)),
        ) {
            if conns >= 16 {
                let r = med(w, |r| r.cpu_proxy) / med(n, |r| r.cpu_proxy);
                let _ = writeln!(
                    o,
                    "| (context) proxy CPU per request, weir ÷ nginx, {conns} conns | {r:.2}× | |"
                );
            }
        }
    }
    if let (Some(w), Some(d)) = (loads.get(&(64, Path::Weir)), loads.get(&(64, Path::Direct))) {
        let added = med(w, |r| r.p99) - med(d, |r| r.p99);
        let nginx = loads
            .get(&(64, Path::Nginx))
            .map(|n| {
                format!(
                    " (nginx: {} ms)",
                    signed_ms(med(n, |r| r.p99) - med(d, |r| r.p99))
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "| added p99 < 1 ms at 64 conns | {} ms{nginx} | {} |",
            signed_ms(added),
            verdict(added < 1.0)
        );
    }
    if let Some(w) = streams.get(&Path::Weir) {
        let added = med(w, |r| r.ttft50) - d_ttft;
        let nginx = streams
            .get(&Path::Nginx)
            .map(|n| format!(" (nginx: {} ms)", signed_ms(med(n, |r| r.ttft50) - d_ttft)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "| added time to first token < 0.5 ms (p50) | {} ms{nginx} | {} |",
            signed_ms(added),
            verdict(added < 0.5)
        );
    }
    let _ = writeln!(
        o,
        "| idle RSS < 20 MiB | {:.1} MiB just started, {:.1} MiB after load | {} |",
        mib(mem.idle_start),
        mib(mem.idle_after_load),
        verdict(mib(mem.idle_start) < 20.0 && mib(mem.idle_after_load) < 20.0)
    );
    let _ = writeln!(
        o,
        "| < 16 KiB per idle client connection | {per_idle:.1} KiB with {}{} | {} |",
        thousands(mem.weir_idle.steps.last().map_or(0.0, |s| s.0 as f64)),
        mem.nginx_idle
            .as_ref()
            .map(|n| format!(" (nginx: {:.1} KiB)", n.per_conn()))
            .unwrap_or_default(),
        verdict(per_idle < 16.0)
    );

    // Noise.
    let foreign: Vec<f64> = loads
        .values()
        .flatten()
        .map(|r| r.foreign)
        .chain(streams.values().flatten().map(|r| r.foreign))
        .collect();
    let max_foreign = foreign.iter().copied().fold(0.0, f64::max);
    let spread = loads
        .values()
        .map(|runs| {
            let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
            let (lo, hi) = rps
                .iter()
                .fold((f64::MAX, 0.0_f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            (hi - lo) / median(&rps)
        })
        .fold(0.0, f64::max);
    let _ = writeln!(
        o,
        "\n## Noise\n\n\
         CPU used by processes outside the bench during the measured windows: median {:.1} %, \
         max {:.1} % of the machine. Largest spread of req/s between rounds of one row: {:.0} % \
         of its median.",
        median(&foreign),
        max_foreign,
        spread * 100.0
    );
    o
}
