//! Hot reload: the policy file is watched (plain writes, rename-on-save,
//! Kubernetes `..data` symlink swaps) and reloaded on SIGHUP; a valid policy
//! replaces the old one atomically, an invalid one changes nothing; state is
//! kept across reloads; and not one request fails meanwhile.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use crate::support::upstream::full;
use crate::support::*;

/// An upstream that echoes `x-policy-version` and, on `/stream`, sends a
/// few SSE events with short pauses.
async fn versioned_upstream() -> MockUpstream {
    MockUpstream::start(|request| async move {
        let version = request
            .headers()
            .get("x-policy-version")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        if request.uri().path().ends_with("/stream") {
            let (events, response) = sse_body();
            tokio::spawn(async move {
                for n in 0..5 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if events
                        .send(Bytes::from(format!("data: {n}\n\n")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = events.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            });
            return response;
        }
        Response::builder()
            .header("x-seen-version", version)
            .body(full("ok"))
            .unwrap()
    })
    .await
}

fn versioned_policy(upstream: &MockUpstream, version: usize, proxy: &str, admin: &str) -> String {
    format!(
        "listen: {proxy}\nadmin: {admin}\nupstreams:\n  llm:\n    route: /v1\n    url: {}\n    headers:\n      x-policy-version: \"{version}\"\n",
        upstream.url()
    )
}

/// Writes `text` to `path` in place.
fn plain_write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Writes a sibling file and renames it over `path`, as editors save.
fn rename_on_save(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Kubernetes' ConfigMap update: a new timestamped directory, then the
/// `..data` symlink is swapped to it atomically.
fn configmap_swap(dir: &Path, n: usize, text: &str) {
    let version = dir.join(format!("..v{n}"));
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("weir.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{n}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

async fn seen_version(weir: &TestWeir) -> String {
    let response = send(get(&weir.url("/v1/x"))).await;
    assert_eq!(response.status(), 200);
    response.headers()["x-seen-version"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rewrites_under_load_fail_no_request() {
    let upstream = versioned_upstream().await;
    let dir = Scratch::new("load");
    let path = dir.0.join("weir.yaml");
    // Fixed addresses are only what the file says; ports stay ephemeral
    // because `listen` and `admin` never change on reload.
    let (proxy, admin) = ("127.0.0.1:0", "127.0.0.1:0");
    plain_write(&path, &versioned_policy(&upstream, 0, proxy, admin));
    let weir = Arc::new(TestWeir::start_watching(&path).await);
    assert_eq!(seen_version(&weir).await, "0");

    // 8 clients, streams among them, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (weir, stop, done) = (weir.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let client = client();
                while !stop.load(Ordering::SeqCst) {
                    let streamed = i % 3 == 0;
                    let path = if streamed { "/v1/stream" } else { "/v1/plain" };
                    let response =
                        tokio::time::timeout(PATIENCE, client.request(get(&weir.url(path))))
                            .await
                            .expect("answered in time")
                            .expect("no request fails");
                    assert_eq!(response.status(), 200, "no request fails");
                    let body = body_string(response).await;
                    if streamed {
                        assert!(
                            body.ends_with("data: [DONE]\n\n"),
                            "stream intact: {body:?}"
                        );
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    let mut errors = 0.0;
    let mut version = 0;
    for step in 1..=20 {
        if step % 4 == 0 {
            // Invalid in between: counted, and nothing changes.
            let invalid =
                format!("upstreams:\n  llm:\n    route: /v1\n    url: ftp://broken-{step}\n");
            match step {
                s if s < 8 => plain_write(&path, &invalid),
                s if s < 13 => rename_on_save(&path, &invalid),
                s => configmap_swap(&dir.0, s * 100, &invalid),
            }
            errors += 1.0;
            let sample = r#"weir_config_reloads_total{result="error"}"#;
            assert_eq!(
                weir.metric_eventually(sample, errors).await,
                errors,
                "invalid version {step} not noticed"
            );
            assert_eq!(
                seen_version(&weir).await,
                version.to_string(),
                "invalid policy changed nothing"
            );
            continue;
        }
        version = step;
        let text = versioned_policy(&upstream, version, proxy, admin);
        match step {
            s if s < 7 => plain_write(&path, &text),
            s if s < 13 => rename_on_save(&path, &text),
            13 => {
                // Move to the Kubernetes layout: weir.yaml -> ..data/weir.yaml.
                configmap_swap(&dir.0, step, &text);
                let link = dir.0.join("weir.yaml.link");
                std::os::unix::fs::symlink("..data/weir.yaml", &link).unwrap();
                std::fs::rename(&link, &path).unwrap();
            }
            s => configmap_swap(&dir.0, s, &text),
        }
        let want = version.to_string();
        assert_eq!(
            settles(&want, || seen_version(&weir)).await,
            want,
            "version {version} never took effect"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("every client's requests succeeded");
    }
    assert!(done.load(Ordering::SeqCst) > 100, "the load was real");
    assert_eq!(
        weir.metric(r#"weir_config_reloads_total{result="error"}"#)
            .await,
        5.0
    );
    assert!(
        weir.metric(r#"weir_config_reloads_total{result="ok"}"#)
            .await
            >= 15.0
    );
    assert!(
        weir.metric("weir_config_last_reload_success_timestamp_seconds")
            .await
            > 1.7e9
    );
    Arc::into_inner(weir)
        .expect("clients are done")
        .shutdown()
        .await;
}

#[tokio::test]
async fn a_breaker_open_on_a_stays_open_across_a_reload_that_changes_only_b() {
    let failing =
        MockUpstream::start(|_| async { Response::builder().status(500).body(full("x")).unwrap() })
            .await;
    let other = MockUpstream::fixed("b").await;
    let dir = Scratch::new("breaker");
    let path = dir.0.join("weir.yaml");
    let text = |b_attempts: u32| {
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstreams:\n  a:\n    route: /a\n    url: {}\n    retry:\n      attempts: 1\n    circuit_breaker:\n      consecutive_failures: 2\n      open_for: 60s\n  b:\n    route: /b\n    url: {}\n    retry:\n      attempts: {b_attempts}\n",
            failing.url(),
            other.url()
        )
    };
    plain_write(&path, &text(1));
    let weir = TestWeir::start_watching(&path).await;
    for _ in 0..2 {
        assert_eq!(send(get(&weir.url("/a/x"))).await.status(), 500);
    }
    assert_eq!(
        send(get(&weir.url("/a/x"))).await.headers()["x-weir-reject"],
        "circuit_open"
    );
    let (_, before) = weir.admin_get("/upstreams").await;
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();

    let changes = weir
        .handle
        .reload(&{
            rename_on_save(&path, &text(2));
            path.clone()
        })
        .await
        .unwrap();
    assert_eq!(changes.changed, ["b"]);
    assert_eq!(changes.unchanged, ["a"]);

    let response = send(get(&weir.url("/a/x"))).await;
    assert_eq!(
        response.headers()["x-weir-reject"],
        "circuit_open",
        "still open"
    );
    assert_eq!(failing.hits(), 2);
    let (_, after) = weir.admin_get("/upstreams").await;
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after["a"]["breaker"], "open");
    assert_eq!(after["a"]["config_hash"], before["a"]["config_hash"]);
    assert_ne!(after["b"]["config_hash"], before["b"]["config_hash"]);
    weir.shutdown().await;
}

#[tokio::test]
async fn a_changed_upstream_keeps_its_open_breaker_and_its_pool() {
    let failing =
        MockUpstream::start(|_| async { Response::builder().status(500).body(full("x")).unwrap() })
            .await;
    let dir = Scratch::new("carry");
    let path = dir.0.join("weir.yaml");
    let text = |idle: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstreams:\n  a:\n    route: /a\n    url: {}\n    timeouts:\n      idle: {idle}\n    retry:\n      attempts: 1\n    circuit_breaker:\n      consecutive_failures: 2\n      open_for: 60s\n",
            failing.url()
        )
    };
    plain_write(&path, &text("30s"));
    let weir = TestWeir::start_watching(&path).await;
    for _ in 0..2 {
        send(get(&weir.url("/a/x"))).await;
    }
    plain_write(&path, &text("20s"));
    let changes = weir.handle.reload(&path).await.unwrap();
    assert_eq!(changes.changed, ["a"]);
    assert_eq!(
        send(get(&weir.url("/a/x"))).await.headers()["x-weir-reject"],
        "circuit_open"
    );
    assert_eq!(
        failing.connections(),
        1,
        "the pool survived a timeout change"
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn a_stream_survives_a_reload_that_removes_its_upstream() {
    let (streaming, mut senders) = MockUpstream::held_streams().await;
    let other = MockUpstream::fixed("other").await;
    let dir = Scratch::new("removed");
    let path = dir.0.join("weir.yaml");
    let both = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstreams:\n  gone:\n    route: /gone\n    url: {}\n  stays:\n    route: /stays\n    url: {}\n",
        streaming.url(),
        other.url()
    );
    plain_write(&path, &both);
    let weir = TestWeir::start_watching(&path).await;
    let client = client();
    let (events, mut body) = open_stream(
        &client,
        &weir.url("/gone/v1/chat/completions"),
        &mut senders,
    )
    .await;

    let only_other = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstreams:\n  stays:\n    route: /stays\n    url: {}\n",
        other.url()
    );
    rename_on_save(&path, &only_other);
    let listed = || async { weir.admin_get("/upstreams").await.1.contains("\"gone\"") };
    assert!(
        !settles(&false, listed).await,
        "the removal never took effect"
    );
    let response = send(get(&weir.url("/gone/x"))).await;
    assert_eq!(response.status(), 404, "new requests no longer reach it");
    // The stream that started before goes on to its end, intact.
    for n in 2..=3 {
        let event = format!("data: {n}\n\n");
        events.send(Bytes::from(event.clone())).await.unwrap();
        assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), event);
    }
    drop(events);
    assert!(next_chunk(&mut body).await.is_none());
    weir.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_policy_in_the_weir_binary() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let upstream = MockUpstream::fixed("ok").await;
    let dir = Scratch::new("sighup");
    let path = dir.0.join("weir.yaml");
    plain_write(
        &path,
        &format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstreams:\n  a:\n    route: /a\n    url: {}\n", upstream.url()),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--config", path.to_str().unwrap(), "--log-format", "json"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let admin = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap();
            if json["message"] == "weir serving" {
                return json["admin"].as_str().unwrap().to_owned();
            }
        }
        panic!("weir exited before serving")
    })
    .await
    .expect("weir starts");
    // The log names the bound admin address, not the configured `:0`.
    let ready = client()
        .get(format!("http://{admin}/readyz").parse().unwrap())
        .await
        .expect("the logged admin address answers");
    assert_eq!(ready.status(), 200);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloaded = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("policy reloaded") {
                return true;
            }
        }
        false
    })
    .await
    .expect("weir reloads on SIGHUP");
    assert!(reloaded);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM drains and exits 0: {status}");
}

#[tokio::test]
async fn a_new_max_in_flight_applies_without_losing_requests_in_flight() {
    let (upstream, release) = MockUpstream::gated().await;
    let dir = Scratch::new("resize");
    let path = dir.0.join("weir.yaml");
    let text = |max: u32| {
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstreams:\n  a:\n    route: /a\n    url: {}\n    retry:\n      attempts: 1\n    concurrency:\n      max_in_flight: {max}\n      max_queue: 0\n",
            upstream.url()
        )
    };
    plain_write(&path, &text(1));
    let weir = TestWeir::start_watching(&path).await;
    let first = tokio::spawn(client().request(get(&weir.url("/a/1"))));
    eventually("the first request is at the upstream", || {
        upstream.hits() == 1
    })
    .await;
    assert_eq!(
        send(get(&weir.url("/a/2"))).await.headers()["x-weir-reject"],
        "overloaded"
    );

    // Grow to 3: the held request keeps its place, two more fit.
    plain_write(&path, &text(3));
    weir.handle.reload(&path).await.unwrap();
    let more: Vec<_> = (0..2)
        .map(|i| tokio::spawn(client().request(get(&weir.url(&format!("/a/more{i}"))))))
        .collect();
    eventually("three requests at the upstream", || upstream.hits() == 3).await;
    assert_eq!(
        send(get(&weir.url("/a/4"))).await.headers()["x-weir-reject"],
        "overloaded"
    );

    // Shrink to 1 while three are in flight: none is cut off.
    plain_write(&path, &text(1));
    weir.handle.reload(&path).await.unwrap();
    release.send(true).unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    for m in more {
        assert_eq!(m.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        weir.metric_eventually(r#"weir_in_flight{upstream="a"}"#, 0.0)
            .await,
        0.0
    );
    weir.shutdown().await;
}
