//! The bench's child processes (mock upstreams, weir, nginx), their cleanup,
//! and what `/proc` says about them (RSS, CPU time).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::load;

/// Where nginx is looked for at run time; the bench never installs it.
pub const NGINX: &str = "/usr/sbin/nginx";

/// A child process that is stopped when dropped, on panic too: SIGTERM, up to
/// 3 s to exit (nginx's master stops its workers, weir drains), then SIGKILL.
pub struct Proc {
    name: String,
    child: Child,
    /// The upstream role exits when its stdin closes, so it dies with the
    /// bench even if the bench is SIGKILLed.
    stdin: Option<ChildStdin>,
    log: Option<PathBuf>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the tail of the process's log if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return "(stderr inherited)".to_owned();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        for _ in 0..300 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{} did not stop on SIGTERM within 3 s: SIGKILL", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory for policy files, configs and logs, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the bench's temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("WEIR_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free at the time of asking (bind :0, read, close).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A mock upstream in its own process (this bench binary re-executed with
/// `WEIR_BENCH_ROLE=upstream`), so it shares no runtime with the load generator.
pub struct Upstream {
    pub proc: Proc,
    pub addr: SocketAddr,
}

pub fn spawn_upstream(chunk_delay: Duration, chunks: usize, threads: usize) -> Upstream {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .env("WEIR_BENCH_ROLE", "upstream")
        .env(
            "WEIR_BENCH_CHUNK_DELAY_US",
            chunk_delay.as_micros().to_string(),
        )
        .env("WEIR_BENCH_CHUNKS", chunks.to_string())
        .env("WEIR_BENCH_UPSTREAM_THREADS", threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the upstream process");
    let stdout = child.stdout.take().expect("upstream stdout");
    let stdin = child.stdin.take();
    let proc = Proc {
        name: "upstream".to_owned(),
        child,
        stdin,
        log: None,
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the upstream's port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("upstream printed {line:?}, not a port"));
    Upstream {
        proc,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// weir (the release binary cargo built for this bench) as a child process.
pub struct Weir {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts weir with a generated policy: `/v1` to `fast` (the upstream of every
/// throughput and latency run), `/slow/v1` to `slow` (the slow streams of the
/// memory run, with a bulkhead wide enough for 1,000 of them). Everything else
/// is weir's defaults: retries, breaker, bulkhead (64 in flight), accounting
/// with stream usage injection.
pub async fn spawn_weir(dir: &Path, tag: &str, fast: SocketAddr, slow: SocketAddr) -> Weir {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let policy = format!(
        "listen: {addr}\n\
         admin: {admin}\n\
         shutdown:\n  drain_timeout: 1s\n\
         upstreams:\n\
         \x20 mock:\n\
         \x20   route: /v1\n\
         \x20   url: http://{fast}/v1\n\
         \x20   kind: openai\n\
         \x20   pool: {{ max_idle: 128 }}\n\
         \x20 slow:\n\
         \x20   route: /slow/v1\n\
         \x20   url: http://{slow}/v1\n\
         \x20   kind: openai\n\
         \x20   concurrency: {{ max_in_flight: 4096, max_queue: 256 }}\n"
    );
    let path = dir.join(format!("weir-{tag}.yaml"));
    std::fs::write(&path, policy).expect("write the weir policy");
    let log = dir.join(format!("weir-{tag}.log"));
    let mut command = Command::new(weir_bin());
    command
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the weir log"));
    // weir's runtime takes its worker count from tokio's own variable.
    if let Ok(threads) = std::env::var("WEIR_BENCH_WEIR_THREADS") {
        command.env("TOKIO_WORKER_THREADS", threads);
    }
    let child = command.spawn().expect("spawn weir");
    let mut proc = Proc {
        name: format!("weir ({tag})"),
        child,
        stdin: None,
        log: Some(log),
    };
    wait_for(&mut proc, admin, "/readyz").await;
    Weir { proc, addr, admin }
}

/// The weir binary: `WEIR_BENCH_WEIR_BIN`, else the release build cargo made for this bench.
pub fn weir_bin() -> String {
    std::env::var("WEIR_BENCH_WEIR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weir").to_owned())
}

/// nginx as a tuned keep-alive reverse proxy, or None when it is not installed.
pub struct Nginx {
    /// Held to stop nginx when dropped.
    _proc: Proc,
    pub addr: SocketAddr,
    /// The master and its workers, for CPU accounting.
    pub pids: Vec<u32>,
}

/// `worker_processes auto` (one per core, 2 here), the counterpart of weir's
/// tokio runtime with one worker thread per core. Upstream keep-alive (128
/// idle connections, as weir's pool), HTTP/1.1 to the upstream, no response
/// buffering (so SSE passes event by event, as through weir), no access log
/// (weir logs nothing per request at `warn`), and no per-connection request
/// cap (nginx closes a keep-alive connection after 1,000 requests by default).
pub async fn spawn_nginx(dir: &Path, upstream: SocketAddr) -> Option<Nginx> {
    if !Path::new(NGINX).exists() {
        return None;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let d = dir.display();
    let mut conf = String::new();
    let _ = write!(
        conf,
        "daemon off;\n\
         master_process on;\n\
         worker_processes auto;\n\
         worker_rlimit_nofile 65536;\n\
         error_log {d}/nginx-error.log warn;\n\
         pid {d}/nginx.pid;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 keepalive_requests 100000000;\n\
         \x20 keepalive_timeout 300s;\n\
         \x20 tcp_nodelay on;\n\
         \x20 upstream u {{\n\
         \x20   server {upstream};\n\
         \x20   keepalive 128;\n\
         \x20   keepalive_requests 100000000;\n\
         \x20   keepalive_timeout 300s;\n\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen {addr} backlog=4096;\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://u;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20     proxy_buffering off;\n\
         \x20     proxy_request_buffering off;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let log = dir.join("nginx-stderr.log");
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the nginx log"))
        .spawn()
        .expect("spawn nginx");
    let mut proc = Proc {
        name: "nginx".to_owned(),
        child,
        stdin: None,
        log: Some(log),
    };
    wait_for(&mut proc, addr, "/v1/models").await;
    let master = proc.pid();
    let mut pids = vec![master];
    pids.extend(children_of(master));
    Some(Nginx {
        _proc: proc,
        addr,
        pids,
    })
}

/// Polls `GET path` until 200, for up to 15 s.
async fn wait_for(proc: &mut Proc, addr: SocketAddr, path: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        proc.assert_running();
        if load::get_status(addr, path).await == Some(200) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not ready on {addr}{path} after 15 s; log:\n{}",
            proc.name,
            proc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state(3) ppid(4) ... utime(14) stime(15).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    field(14) + field(15)
}

/// Busy ticks of the whole machine (all CPUs) from `/proc/stat`: everything
/// but idle and iowait.
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    v.iter().take(8).sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

/// Direct children of a process (nginx's workers).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            rest.split_whitespace().nth(1) == Some(parent.to_string().as_str())
        })
        .collect()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// One line of a command's output, or "?".
pub fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

/// Soft and hard RLIMIT_NOFILE of this process, from `/proc/self/limits`.
pub fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (
        v.first().copied().unwrap_or(1024),
        v.get(1).copied().unwrap_or(1024),
    )
}

/// Raises RLIMIT_NOFILE so 10,000 client connections fit in this process and
/// in weir, which inherits the limit. nix's `setrlimit` needs its `resource`
/// feature, which this crate does not enable, so this asks util-linux's
/// `prlimit` to do it on this process: the soft limit up to `want` (to the
/// hard limit if lower; as root, hard and soft to `want`). Returns the soft
/// limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile_limits();
    if soft >= want {
        return soft;
    }
    let pid = std::process::id().to_string();
    for limit in [
        format!("{want}:{want}"),
        format!("{}:{hard}", want.min(hard)),
    ] {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={limit}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
    }
    nofile_limits().0
}
