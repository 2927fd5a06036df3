//! The usage log: one JSON line per finished request, written off the
//! request path.
//!
//! Requests hand their event to a bounded queue and move on; a full queue
//! drops the event and counts it (`weir_usage_events_dropped_total`), it
//! never makes a request wait. A dedicated thread (file I/O blocks, so it is
//! kept off the async workers) writes through a buffer, flushes at least
//! every second and at shutdown, and reopens the file on request (SIGHUP,
//! for log rotation).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::Serialize;

/// Events waiting to be written; past this, new ones are dropped.
pub const QUEUE_CAPACITY: usize = 16 * 1024;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One finished request, as the contract lists its fields.
#[derive(Debug, Clone, Serialize)]
pub struct UsageEvent {
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    pub request_id: String,
    pub upstream: Arc<str>,
    pub tenant: Arc<str>,
    pub model: Option<String>,
    pub status: u16,
    pub attempts: u32,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub duration_ms: f64,
    pub streamed: bool,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

enum Command {
    Event(Box<UsageEvent>),
    Wake,
    Stop,
}

pub struct UsageLog {
    /// Bounded; `try_send` never waits and takes no process-wide lock.
    tx: SyncSender<Command>,
    closed: AtomicBool,
    reopen: Arc<AtomicBool>,
    dropped: IntCounter,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl UsageLog {
    /// Starts the writer thread for `path` (created if missing, appended to).
    pub fn start(path: PathBuf, capacity: usize, dropped: IntCounter) -> std::io::Result<Self> {
        let file = open(&path)?;
        let (tx, rx) = mpsc::sync_channel(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        let writer = std::thread::Builder::new()
            .name("weir-usage-log".into())
            .spawn(move || write_loop(path, file, rx, flag))?;
        Ok(Self {
            tx,
            closed: AtomicBool::new(false),
            reopen,
            dropped,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues an event; never waits. A full queue drops and counts it.
    pub fn record(&self, event: UsageEvent) {
        if self.closed.load(Ordering::Acquire) {
            self.dropped.inc();
            return;
        }
        match self.tx.try_send(Command::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Reopens the file (after a rotation), before the next write.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        let _ = self.tx.try_send(Command::Wake);
    }

    /// Writes what is queued, flushes and stops the writer. Blocking: call
    /// from `spawn_blocking`.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Behind every event already queued; waits for room if it must.
        let _ = self.tx.send(Command::Stop);
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_loop(path: PathBuf, file: File, rx: mpsc::Receiver<Command>, reopen: Arc<AtomicBool>) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(512);
    let mut last_flush = SystemTime::now();
    loop {
        let command = rx.recv_timeout(FLUSH_EVERY);
        match command {
            Ok(Command::Event(event)) => {
                line.clear();
                if serde_json::to_writer(&mut line, &event).is_ok() {
                    line.push(b'\n');
                    if let Err(e) = out.write_all(&line) {
                        tracing::error!(error = %e, "writing the usage log");
                    }
                }
            }
            Ok(Command::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
        // Checked after the event: whatever was queued before the rotation
        // goes to the old file.
        if reopen.swap(false, Ordering::AcqRel) {
            let _ = out.flush();
            match open(&path) {
                Ok(file) => out = BufWriter::with_capacity(64 * 1024, file),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "reopening the usage log")
                }
            }
            last_flush = SystemTime::now();
        }
        // At least every second, even under a steady stream of events.
        if last_flush.elapsed().map_or(true, |e| e >= FLUSH_EVERY) {
            let _ = out.flush();
            last_flush = SystemTime::now();
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> UsageEvent {
        UsageEvent {
            ts: SystemTime::UNIX_EPOCH,
            request_id: format!("r{n}"),
            upstream: "openai".into(),
            tenant: "t".into(),
            model: Some("gpt".into()),
            status: 200,
            attempts: 1,
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            duration_ms: 1.5,
            streamed: false,
        }
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("weir-usage-{}-{name}.jsonl", std::process::id()))
    }

    #[test]
    fn writes_one_json_line_per_event_and_flushes_on_close() {
        let path = temp("lines");
        let _ = std::fs::remove_file(&path);
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = UsageLog::start(path.clone(), 16, dropped.clone()).unwrap();
        log.record(event(1));
        log.record(event(2));
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["request_id"], "r1");
        assert_eq!(lines[0]["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(lines[1]["prompt_tokens"], 3);
        assert_eq!(dropped.get(), 0);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reopens_after_rotation() {
        let path = temp("rotate");
        let rotated = temp("rotated");
        let _ = std::fs::remove_file(&path);
        let log = UsageLog::start(path.clone(), 16, IntCounter::new("d", "d").unwrap()).unwrap();
        log.record(event(1));
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.record(event(2));
        log.close();
        assert!(std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("\"r1\""));
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(
            fresh.contains("\"r2\"") && !fresh.contains("\"r1\""),
            "{fresh}"
        );
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
    }
}
