//! The Prometheus metrics every run writes (textfile and Pushgateway), read
//! back after real `aidt-batch` processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{stderr, TestEnv};

/// The samples of a textfile: `name{labels}` → value (parsed here, not with
/// the crate's code).
fn samples(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn metric(samples: &BTreeMap<String, f64>, name: &str, job: &str) -> f64 {
    let key = format!("aidt_batch_{name}{{job_id=\"{job}\"}}");
    *samples
        .get(&key)
        .unwrap_or_else(|| panic!("no {key} in {samples:?}"))
}

fn status_of(samples: &BTreeMap<String, f64>, job: &str) -> Vec<String> {
    samples
        .iter()
        .filter(|(k, v)| {
            k.starts_with(&format!("aidt_batch_last_run_status{{job_id=\"{job}\",")) && **v == 1.0
        })
        .map(|(k, _)| {
            k.split("status=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"}")
                .to_string()
        })
        .collect()
}

async fn ended_at_epoch(env: &TestEnv, status: &str) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM max(ended_at))::float8 FROM batch_job_run WHERE job_id = 'BO-01-005' AND status = $1",
    )
    .bind(status)
    .fetch_one(env.pg())
    .await
    .unwrap()
}

#[tokio::test]
async fn each_run_writes_its_metrics_and_a_failure_keeps_the_last_success() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aidt_batch_bo_01_005.prom");
    // Three notices past their display period, one still shown.
    sqlx::query(
        "INSERT INTO tb_bo_notice (title, disp_yn, disp_end_dt) VALUES
           ('a', 'Y', now() - interval '2 days'), ('b', 'Y', now() - interval '1 hour'),
           ('c', 'Y', now() - interval '3 days'), ('d', 'Y', now() + interval '1 day')",
    )
    .execute(env.pg())
    .await
    .unwrap();
    let textfile_env = ("AIDT__METRICS__TEXTFILE_DIR", dir.path().to_str().unwrap());

    // Success.
    let out = env
        .command(&["bo-01-005"])
        .env(textfile_env.0, textfile_env.1)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = samples(&file);
    assert_eq!(metric(&s, "last_run_items_written", "BO-01-005"), 3.0);
    assert_eq!(metric(&s, "last_run_items_failed", "BO-01-005"), 0.0);
    assert_eq!(metric(&s, "last_run_exit_code", "BO-01-005"), 0.0);
    assert_eq!(status_of(&s, "BO-01-005"), ["COMPLETED"]);
    let success_at = ended_at_epoch(&env, "COMPLETED").await;
    let last_success = metric(&s, "last_success_timestamp_seconds", "BO-01-005");
    assert!(
        (last_success - success_at).abs() < 0.01,
        "{last_success} vs {success_at}"
    );
    let duration = metric(&s, "last_run_duration_seconds", "BO-01-005");
    assert!(duration > 0.0 && duration < 60.0, "{duration}");
    // node-exporter (often another user) can read it; no temporary file left.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Failure: the job's table is gone, the run fails (exit 1).
    tokio::time::sleep(Duration::from_millis(50)).await;
    sqlx::query("ALTER TABLE tb_bo_notice RENAME TO tb_bo_notice_gone")
        .execute(env.pg())
        .await
        .unwrap();
    let out = env
        .command(&["bo-01-005"])
        .env(textfile_env.0, textfile_env.1)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = samples(&file);
    assert_eq!(metric(&s, "last_run_exit_code", "BO-01-005"), 1.0);
    assert_eq!(status_of(&s, "BO-01-005"), ["FAILED"]);
    assert_eq!(metric(&s, "last_run_items_written", "BO-01-005"), 0.0);
    let failed_at = ended_at_epoch(&env, "FAILED").await;
    assert!((metric(&s, "last_run_timestamp_seconds", "BO-01-005") - failed_at).abs() < 5.0);
    assert!(failed_at > success_at);
    assert_eq!(
        metric(&s, "last_success_timestamp_seconds", "BO-01-005"),
        last_success,
        "a failed run keeps the last success"
    );

    // PostgreSQL unreachable: no history to read, the textfile's value is kept.
    let out = env
        .command(&["bo-01-005"])
        .env(textfile_env.0, textfile_env.1)
        .env(
            "AIDT__DATABASE__URL",
            "postgres://aidt:aidt@127.0.0.1:9/aidt?sslmode=disable",
        )
        .env("AIDT__DATABASE__CONNECT_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = samples(&file);
    assert_eq!(status_of(&s, "BO-01-005"), ["FAILED"]);
    assert_eq!(metric(&s, "last_run_exit_code", "BO-01-005"), 1.0);
    assert_eq!(
        metric(&s, "last_success_timestamp_seconds", "BO-01-005"),
        last_success
    );
    assert!(
        !stderr(&out).contains("aidt:aidt@"),
        "no password in the log"
    );

    // A dry run exports nothing: the file still shows the last real run.
    sqlx::query("ALTER TABLE tb_bo_notice_gone RENAME TO tb_bo_notice")
        .execute(env.pg())
        .await
        .unwrap();
    let before = std::fs::read_to_string(&file).unwrap();
    let out = env
        .command(&["bo-01-005", "--dry-run"])
        .env(textfile_env.0, textfile_env.1)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

#[tokio::test]
async fn an_unwritable_textfile_dir_is_logged_and_the_run_still_succeeds() {
    let env = TestEnv::new().await;
    let out = env
        .command(&["bo-01-005"])
        .env(
            "AIDT__METRICS__TEXTFILE_DIR",
            "/nonexistent/textfile_collector",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not write the metrics textfile"),
        "{}",
        stderr(&out)
    );
}

/// One HTTP request as a Pushgateway receives it.
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    content_type: String,
    body: String,
}

/// A Pushgateway on loopback answering every request with `status`; the
/// requests come out of the channel.
async fn pushgateway(status: u16) -> (String, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "connection closed before the headers ended");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                    }
                };
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap_or(0);
                while buf.len() < body_start + length {
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut request_line = head.lines().next().unwrap().split(' ');
                let received = Received {
                    method: request_line.next().unwrap().to_string(),
                    path: request_line.next().unwrap().to_string(),
                    content_type: header("content-type"),
                    body: String::from_utf8_lossy(&buf[body_start..body_start + length])
                        .into_owned(),
                };
                let _ = tx.send(received);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, rx)
}

// Multi-threaded: the test's Pushgateway answers while the test waits for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_pushes_its_metrics_to_the_pushgateway() {
    let env = TestEnv::new().await;
    sqlx::query(
        "INSERT INTO tb_bo_notice (title, disp_yn, disp_end_dt) VALUES
           ('a', 'Y', now() - interval '2 days'), ('b', 'Y', now() + interval '1 day')",
    )
    .execute(env.pg())
    .await
    .unwrap();
    let (url, mut received) = pushgateway(200).await;
    let out = env
        .command(&["bo-01-005"])
        .env("AIDT__METRICS__PUSHGATEWAY_URL", format!("{url}/"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let push = received.try_recv().expect("one push");
    assert!(received.try_recv().is_err(), "only one push");
    assert_eq!(push.method, "POST");
    assert_eq!(push.path, "/metrics/job/BO-01-005");
    assert!(
        push.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        push.content_type
    );
    let lines: BTreeSet<&str> = push.body.lines().collect();
    let success_at = ended_at_epoch(&env, "COMPLETED").await;
    for expected in [
        "aidt_batch_last_run_items_written{job_id=\"BO-01-005\"} 1",
        "aidt_batch_last_run_items_failed{job_id=\"BO-01-005\"} 0",
        "aidt_batch_last_run_exit_code{job_id=\"BO-01-005\"} 0",
        "aidt_batch_last_run_status{job_id=\"BO-01-005\",status=\"COMPLETED\"} 1",
        "aidt_batch_last_run_status{job_id=\"BO-01-005\",status=\"FAILED\"} 0",
        "# TYPE aidt_batch_last_success_timestamp_seconds gauge",
    ] {
        assert!(
            lines.contains(expected),
            "no `{expected}` in\n{}",
            push.body
        );
    }
    let pushed_success: f64 = push
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix("aidt_batch_last_success_timestamp_seconds{job_id=\"BO-01-005\"} ")
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!((pushed_success - success_at).abs() < 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_push_is_logged_and_never_fails_the_run() {
    let env = TestEnv::new().await;
    // A Pushgateway that refuses, then none at all (a port nothing listens on).
    let (url, mut received) = pushgateway(500).await;
    for (target, why) in [
        (url.as_str(), "answered 500"),
        ("http://127.0.0.1:9", "could not be reached"),
    ] {
        let out = env
            .command(&["bo-01-005"])
            .env("AIDT__METRICS__PUSHGATEWAY_URL", target)
            .env("AIDT__METRICS__PUSH_TIMEOUT_SECS", "2")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let log = stderr(&out);
        assert!(
            log.contains("could not push the metrics") && log.contains(why),
            "{log}"
        );
    }
    assert!(
        received.try_recv().is_ok(),
        "the refusing gateway got the push"
    );
}

#[tokio::test]
async fn a_run_that_cannot_start_still_reports_its_failure() {
    // Nothing migrated: the run has no history row and exits 2.
    let env = TestEnv::empty().await;
    let dir = tempfile::tempdir().unwrap();
    let out = env
        .command(&["bo-01-005"])
        .env("AIDT__METRICS__TEXTFILE_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let s = samples(&dir.path().join("aidt_batch_bo_01_005.prom"));
    assert_eq!(metric(&s, "last_run_exit_code", "BO-01-005"), 2.0);
    assert_eq!(status_of(&s, "BO-01-005"), ["FAILED"]);
    assert!(
        !s.keys().any(|k| k.starts_with("aidt_batch_last_success")),
        "no success known: {s:?}"
    );
}
