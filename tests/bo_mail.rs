//! BO-05-006 (weekly usage mail) against real PostgreSQL and a real SMTP
//! server on loopback: each test starts its own `scripts/smtp-sink.py`
//! (aiosmtpd, from the virtualenv `scripts/services` installs) on a free
//! port with its own directory, and reads the .eml files it stored. The
//! expected figures are computed here from the fixture's logins.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use aidt_batch::runtime::history::RunStatus;
use aidt_batch::runtime::Exit;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use sqlx::PgPool;

use crate::bo_stats::{kst, kst_midnight, users, World, OPEN_SESSIONS};
use crate::helpers::*;

/// The reported week (Monday 2 March 2026) and the week before.
const WEEK: &str = "2026-03-02";
const PREVIOUS: &str = "2026-02-23";
/// A Friday: the Saturday cron run's business date.
const RUN_DATE: &str = "2026-03-13";
const SUBJECT: &str = "[AIDT] LMS 주간 이용 통계 (2026-03-02 ~ 2026-03-08)";

// ------------------------------------------------------------- the sink

/// `scripts/smtp-sink.py` on a free loopback port, storing into a temporary
/// directory; killed when dropped.
struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn sink_python() -> PathBuf {
    let home =
        std::env::var("AIDT_SMTP_HOME").unwrap_or_else(|_| "/var/tmp/aidt-batch-smtp".into());
    let python = Path::new(&home).join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/services (it installs aiosmtpd there)",
        python.display()
    );
    python
}

impl Sink {
    fn start(extra: &[&str]) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smtp-sink.py");
        let mut child = Command::new(sink_python())
            .arg(script)
            .args(["--port", "0", "--dir"])
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP sink");
        // Both lines, so the sink never writes into a closed pipe.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the sink's first line").unwrap();
        let _maildir = lines.next().expect("the sink's second line").unwrap();
        let port = first
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected sink line {first:?}"));
        Sink { child, port, dir }
    }

    /// Starts refusing `address` with 550 (or stops, with `false`).
    fn refuse(&self, addresses: &[&str]) {
        std::fs::write(self.dir.path().join("refuse"), addresses.join("\n")).unwrap();
    }

    /// The stored messages, oldest first.
    fn messages(&self) -> Vec<Stored> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files.iter().map(|f| Stored::read(f)).collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stored message, parsed.
#[derive(Debug)]
struct Stored {
    envelope_to: String,
    to: String,
    subject: String,
    /// `type/subtype` of every part.
    parts: Vec<String>,
    text: String,
    html: String,
}

impl Stored {
    fn read(path: &Path) -> Stored {
        let raw = std::fs::read(path).unwrap();
        let msg = MessageParser::default()
            .parse(&raw)
            .expect("a MIME message");
        let parts = msg
            .parts
            .iter()
            .filter_map(|p| p.content_type())
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")))
            .collect();
        // The decoded bodies of the parts themselves (not a conversion of
        // one into the other): text_body / html_body index the real parts.
        let body = |ids: &[u32]| {
            ids.first()
                .and_then(|&i| msg.parts[i as usize].text_contents())
                .unwrap_or_default()
                .to_string()
        };
        let (text, html) = (body(&msg.text_body), body(&msg.html_body));
        Stored {
            envelope_to: msg
                .header_raw("X-Sink-Rcpt-To")
                .unwrap_or_default()
                .trim()
                .to_string(),
            to: msg
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_string(),
            subject: msg.subject().unwrap_or_default().to_string(),
            parts,
            text,
            html,
        }
    }

    /// The HTML part as its visible text: tags dropped, entities of the
    /// renderer decoded, whitespace collapsed.
    fn html_text(&self) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in self.html.chars() {
            match c {
                '<' => {
                    in_tag = true;
                    out.push(' ');
                }
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        let out = out
            .replace("&nbsp;", " ")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&amp;", "&");
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

// ------------------------------------------------------------- the data

const RECIPIENTS: [(&str, &str, &str); 4] = [
    ("ops@aidt.test", "운영팀", "Y"),
    ("data@aidt.test", "데이터팀", "Y"),
    ("cto@aidt.test", "기술총괄", "Y"),
    ("left@aidt.test", "퇴사자", "N"),
];

async fn insert_recipients(pg: &PgPool) {
    for (email, name, active) in RECIPIENTS {
        sqlx::query(
            "INSERT INTO tb_bo_mail_recipient (email, rcpt_nm, active_yn) VALUES ($1, $2, $3)",
        )
        .bind(email)
        .bind(name)
        .bind(active)
        .execute(pg)
        .await
        .unwrap();
    }
}

/// Logins over the two weeks: every user type and level, sessions crossing
/// midnight (Sunday 23:59 → Monday between the weeks too), open sessions,
/// more activity in the reported week, a busiest hour on Wednesday 10:00.
fn two_weeks() -> World {
    let mut logins = Vec::new();
    let previous = date(PREVIOUS);
    for day in 0..14i64 {
        let d = previous + Duration::days(day);
        let at = |h: u32, m: u32| kst(&format!("{d}T{h:02}:{m:02}:00"));
        let reported = day >= 7;
        // Pupils E, M, H on school days; the teacher of E every day.
        if d.weekday().num_days_from_monday() < 5 {
            logins.push((0, at(9, 5), Some(at(9, 50))));
            logins.push((1, at(10, 0), Some(at(11, 30))));
            if reported || day % 2 == 0 {
                logins.push((2, at(13, 10), None)); // open
            }
        }
        logins.push((3, at(8, 30), Some(at(8, 45))));
        if reported {
            logins.push((8, at(19, 0), Some(at(19, 40))));
            logins.push((6, at(10, 20), Some(at(10, 25)))); // unknown school
        }
        // The parent, twice on Wednesdays.
        if d.weekday().num_days_from_monday() == 2 {
            logins.push((5, at(10, 10), Some(at(10, 40))));
            logins.push((5, at(20, 0), None));
            if reported {
                logins.push((4, at(10, 30), Some(at(10, 50))));
                logins.push((7, at(10, 45), Some(at(11, 5)))); // not in tb_lms_user
            }
        }
    }
    // Sunday 23:59 of the week before, into the reported week's Monday.
    logins.push((
        4,
        kst("2026-03-01T23:59:00"),
        Some(kst("2026-03-02T00:30:00")),
    ));
    // Monday 00:00 of the reported week, and Monday 00:00 of the week after.
    logins.push((
        8,
        kst("2026-03-02T00:00:00"),
        Some(kst("2026-03-02T00:10:00")),
    ));
    logins.push((
        1,
        kst("2026-03-09T00:00:00"),
        Some(kst("2026-03-09T00:10:00")),
    ));
    World {
        users: users(),
        logins,
        activity: Vec::new(),
    }
}

/// A week's figures, computed from the fixture.
struct Expected {
    logins: i64,
    login_users: i64,
    users_by: BTreeMap<(String, String), i64>,
    /// (date, logins, distinct users) per day.
    days: Vec<(NaiveDate, i64, i64)>,
    /// (date, hour, users), the earliest of equals.
    busiest: (NaiveDate, i16, i64),
}

fn expected(world: &World, monday: NaiveDate) -> Expected {
    let from = kst_midnight(monday);
    let to = kst_midnight(monday + Duration::days(7));
    let week = world.logins_between(from, to);
    let distinct: BTreeSet<usize> = world
        .logins
        .iter()
        .filter(|l| l.1 >= from && l.1 < to)
        .map(|l| l.0)
        .collect();
    let mut days = Vec::new();
    let mut busiest = (monday, 0i16, -1i64);
    for i in 0..7 {
        let d = monday + Duration::days(i);
        let day = world.logins_between(kst_midnight(d), kst_midnight(d + Duration::days(1)));
        days.push((
            d,
            day.values().map(|v| v.0).sum(),
            day.values().map(|v| v.1).sum(),
        ));
        let hourly = world.connected(d, OPEN_SESSIONS);
        for hour in 0..24i16 {
            let n: i64 = hourly
                .iter()
                .filter(|((h, _), _)| *h == hour)
                .map(|(_, n)| n)
                .sum();
            if n > busiest.2 {
                busiest = (d, hour, n);
            }
        }
    }
    Expected {
        logins: week.values().map(|v| v.0).sum(),
        login_users: distinct.len() as i64,
        users_by: week.into_iter().map(|(k, v)| (k, v.1)).collect(),
        days,
        busiest,
    }
}

// Formatting as the issue asks for it, written here on its own.
fn num(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn delta(this: i64, before: i64) -> String {
    let d = this - before;
    let signed = if d > 0 {
        format!("+{}", num(d))
    } else {
        num(d)
    };
    if before == 0 || d == 0 {
        signed
    } else {
        format!("{signed} ({:+.1}%)", d as f64 * 100.0 / before as f64)
    }
}

fn day_label(d: NaiveDate) -> String {
    let wd =
        ["월", "화", "수", "목", "금", "토", "일"][d.weekday().num_days_from_monday() as usize];
    format!("{}/{}({wd})", d.month(), d.day())
}

fn type_level(t: &str, l: &str) -> String {
    let t = match t {
        "S" => "학생",
        "T" => "교사",
        _ => "학부모",
    };
    let l = match l {
        "E" => "초등",
        "M" => "중등",
        "H" => "고등",
        _ => "학교 없음",
    };
    format!("{t} · {l}")
}

/// Asserts that the message carries the figures, in both parts.
fn assert_figures(msg: &Stored, this: &Expected, before: &Expected) {
    let html = msg.html_text();
    let check = |label: &str, a: String, b: String, change: String| {
        let line = format!("- {label}: {a} (전주 {b}, {change})");
        assert!(
            msg.text.contains(&line),
            "text part lacks {line:?}:\n{}",
            msg.text
        );
        let row = format!("{label} {a} {b} {change}");
        assert!(html.contains(&row), "HTML part lacks {row:?}:\n{html}");
    };
    check(
        "로그인 수",
        num(this.logins),
        num(before.logins),
        delta(this.logins, before.logins),
    );
    check(
        "로그인 사용자 수",
        num(this.login_users),
        num(before.login_users),
        delta(this.login_users, before.login_users),
    );
    let busy = |b: (NaiveDate, i16, i64)| format!("{} {}시 {}명", day_label(b.0), b.1, num(b.2));
    check(
        "최다 접속 시간대",
        busy(this.busiest),
        busy(before.busiest),
        delta(this.busiest.2, before.busiest.2),
    );
    for ((t, l), &n) in &this.users_by {
        let b = before.users_by[&(t.clone(), l.clone())];
        if n == 0 && b == 0 {
            continue;
        }
        check(&type_level(t, l), num(n), num(b), delta(n, b));
    }
    for &(d, logins, users) in &this.days {
        let text = format!(
            "- {}: {}명 (로그인 {})",
            day_label(d),
            num(users),
            num(logins)
        );
        assert!(msg.text.contains(&text), "text part lacks {text:?}");
        let cell = format!("{} {}명 (로그인 {})", day_label(d), num(users), num(logins));
        assert!(html.contains(&cell), "HTML chart lacks {cell:?}:\n{html}");
    }
    // One bar per day with users, the fullest at 100%.
    let bars = msg.html.matches("bgcolor=\"#2563eb\"").count();
    assert_eq!(bars, this.days.iter().filter(|d| d.2 > 0).count());
    assert!(msg.html.contains(
        "width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\"><tr><td bgcolor"
    ));
}

async fn hist(pg: &PgPool) -> Vec<(String, String, Option<DateTime<Utc>>, Option<String>)> {
    sqlx::query_as(
        "SELECT email, status, sent_at, err_msg FROM tb_bo_mail_send_hist
          WHERE week_start = $1 ORDER BY email",
    )
    .bind(date(WEEK))
    .fetch_all(pg)
    .await
    .unwrap()
}

/// Points the in-process runs at `port` (security none, loopback).
fn use_smtp(env: &mut TestEnv, port: u16, auth: Option<(&str, &str)>) {
    let mut smtp = ::config::Map::<String, ::config::Value>::new();
    let mut set = |k: &str, v: ::config::ValueKind| {
        smtp.insert(k.to_string(), ::config::Value::new(None, v));
    };
    set("host", "127.0.0.1".into());
    set("port", i64::from(port).into());
    set("security", "none".into());
    set("timeout_secs", 10i64.into());
    if let Some((user, password)) = auth {
        set("username", user.into());
        set("password", password.into());
    }
    env.configure_job("bo_05_006", "smtp", smtp);
}

async fn setup(env: &TestEnv) -> World {
    let world = two_weeks();
    world.insert(env.pg()).await;
    insert_recipients(env.pg()).await;
    world
}

// ------------------------------------------------------------- the tests

#[tokio::test]
async fn weekly_mail_reaches_every_active_recipient_with_both_parts_and_the_weeks_figures() {
    let mut env = TestEnv::new().await;
    let world = setup(&env).await;
    let sink = Sink::start(&[]);
    use_smtp(&mut env, sink.port, None);

    // No statistics rows at all: the job computes both weeks first.
    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::Success);
    let this = expected(&world, date(WEEK));
    let before = expected(&world, date(PREVIOUS));
    assert!(this.logins > before.logins && before.logins > 0);

    let messages = sink.messages();
    let mut to: Vec<&str> = messages.iter().map(|m| m.to.as_str()).collect();
    to.sort();
    assert_eq!(to, ["cto@aidt.test", "data@aidt.test", "ops@aidt.test"]);
    for msg in &messages {
        assert_eq!(msg.subject, SUBJECT);
        assert_eq!(
            msg.envelope_to,
            format!("<{}>", msg.to),
            "one recipient per message"
        );
        assert_eq!(
            msg.parts,
            ["multipart/alternative", "text/plain", "text/html"],
            "a plain-text and an HTML part"
        );
        assert_figures(msg, &this, &before);
    }
    let ops = messages.iter().find(|m| m.to == "ops@aidt.test").unwrap();
    assert!(ops.text.starts_with("운영팀님,"), "{}", ops.text);

    // The statistics the job computed are the daily jobs' rows.
    for d in (0..14).map(|i| date(PREVIOUS) + Duration::days(i)) {
        assert_eq!(
            crate::bo_stats::connected_stats(env.pg(), d).await,
            world.connected(d, OPEN_SESSIONS),
            "BO-01-003 rows of {d}"
        );
    }
    let computed: serde_json::Value =
        sqlx::query_scalar("SELECT details->'computed' FROM batch_job_run WHERE run_id = $1")
            .bind(outcome.run_id.unwrap())
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(
        computed.as_array().unwrap().len(),
        28,
        "14 days × BO-01-003 and BO-01-004"
    );

    let rows = hist(env.pg()).await;
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r.1 == "SENT" && r.2.is_some() && r.3.is_none()));

    // A rerun sends nothing twice.
    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::Success);
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(hist(env.pg()).await, rows);
}

#[tokio::test]
async fn a_refused_recipient_is_recorded_failed_with_the_reply_exit_4_and_the_next_run_sends_only_to_it(
) {
    let mut env = TestEnv::new().await;
    setup(&env).await;
    let sink = Sink::start(&[]);
    sink.refuse(&["data@aidt.test"]);
    use_smtp(&mut env, sink.port, None);

    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    assert_eq!(
        run_status(env.pg(), outcome.run_id.unwrap()).await,
        RunStatus::CompletedWithErrors
    );
    let rows = hist(env.pg()).await;
    let status: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        status,
        [
            ("cto@aidt.test", "SENT"),
            ("data@aidt.test", "FAILED"),
            ("ops@aidt.test", "SENT")
        ]
    );
    let reply = rows[1].3.as_deref().unwrap();
    assert!(
        reply.contains("550") && reply.contains("mailbox unavailable"),
        "{reply}"
    );
    assert!(rows[1].2.is_none());
    assert_eq!(sink.messages().len(), 2);

    // Still refused: only it is tried, and fails again.
    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    assert_eq!(sink.messages().len(), 2);

    // Accepted now: exactly one more message, to it.
    sink.refuse(&[]);
    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::Success);
    let messages = sink.messages();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2].to, "data@aidt.test");
    assert!(hist(env.pg())
        .await
        .iter()
        .all(|r| r.1 == "SENT" && r.3.is_none()));
}

#[tokio::test]
async fn an_unreachable_smtp_server_fails_the_run_naming_host_and_port_and_records_no_sent_row() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let out = env
        .command(&["bo-05-006", "--date", RUN_DATE])
        .env("AIDT__JOBS__BO_05_006__SMTP__PORT", port.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let recorded: String = sqlx::query_scalar(
        "SELECT error_msg FROM batch_job_run WHERE job_id = 'BO-05-006' ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert!(
        recorded.contains(&format!("127.0.0.1:{port}")),
        "{recorded}"
    );
    assert!(hist(env.pg()).await.is_empty());
}

#[tokio::test]
async fn dry_run_prints_the_message_and_sends_nothing_and_to_sends_one_test_copy_outside_the_history(
) {
    let env = TestEnv::new().await;
    let world = setup(&env).await;
    let sink = Sink::start(&[]);
    let port = sink.port.to_string();

    let out = env
        .command(&["bo-05-006", "--date", RUN_DATE, "--dry-run"])
        .env("AIDT__JOBS__BO_05_006__SMTP__PORT", &port)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!("Subject: {SUBJECT}")),
        "{printed}"
    );
    assert!(
        printed.contains("To: cto@aidt.test, data@aidt.test, ops@aidt.test"),
        "{printed}"
    );
    assert!(printed.contains("--- text/plain ---") && printed.contains("--- text/html ---"));
    let this = expected(&world, date(WEEK));
    assert!(
        printed.contains(&format!("- 로그인 수: {}", num(this.logins))),
        "{printed}"
    );
    assert!(sink.messages().is_empty());
    assert!(hist(env.pg()).await.is_empty());
    let stats: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_bo_lms_conn_stats_daily")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(
        stats, 0,
        "the dry run's computed statistics are rolled back"
    );

    let out = env
        .command(&["bo-05-006", "--date", RUN_DATE, "--to", "tester@aidt.test"])
        .env("AIDT__JOBS__BO_05_006__SMTP__PORT", &port)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, "tester@aidt.test");
    assert_eq!(messages[0].subject, SUBJECT);
    assert!(
        hist(env.pg()).await.is_empty(),
        "a test copy is not history"
    );

    let out = env
        .command(&["bo-05-006", "--to", "not an address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not an address"));
}

#[tokio::test]
async fn a_week_whose_statistics_are_missing_and_cannot_be_computed_is_reported_never_mailed_as_zeros(
) {
    let mut env = TestEnv::new().await;
    // The login history starts on Wednesday of the reported week (older
    // rows deleted): Monday and Tuesday cannot be computed.
    let mut world = two_weeks();
    world.logins.retain(|l| l.1 >= kst("2026-03-04T00:00:00"));
    world.insert(env.pg()).await;
    insert_recipients(env.pg()).await;
    let sink = Sink::start(&[]);
    use_smtp(&mut env, sink.port, None);

    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::Failure);
    let error: String = sqlx::query_scalar("SELECT error_msg FROM batch_job_run WHERE run_id = $1")
        .bind(outcome.run_id.unwrap())
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert!(
        error.contains("2026-03-02 ~ 2026-03-08") && error.contains("begins on 2026-03-04"),
        "{error}"
    );
    assert!(sink.messages().is_empty());
    assert!(hist(env.pg()).await.is_empty());

    // Once Monday's and Tuesday's rows exist (the daily jobs ran then), the
    // week is mailed; the week before has no statistics and says so.
    for day in ["2026-03-02", "2026-03-03"] {
        env.run_ok("BO-01-003", Some(date(day)), false).await;
        env.run_ok("BO-01-004", Some(date(day)), false).await;
    }
    // So must the week's row: the week begins before the oldest login left,
    // so it cannot be counted again.
    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::Failure);
    assert!(sink.messages().is_empty());
    env.run_ok("BO-01-007", Some(date("2026-03-08")), false)
        .await;
    let outcome = env.run_job("BO-05-006", Some(date(RUN_DATE)), false).await;
    assert_eq!(outcome.exit, Exit::Success);
    let messages = sink.messages();
    assert_eq!(messages.len(), 3);
    let this = expected(&world, date(WEEK));
    let line = format!("- 로그인 수: {} (전주 통계 없음, –)", num(this.logins));
    assert!(messages[0].text.contains(&line), "{}", messages[0].text);
}

#[tokio::test]
async fn smtp_credentials_are_used_and_the_password_never_shows() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let password = "s3cret-smtp-pw-7d1f";
    let sink = Sink::start(&["--auth", &format!("batch:{password}")]);
    let port = sink.port.to_string();
    let run = |pw: &str| {
        env.command(&["bo-05-006", "--date", RUN_DATE])
            .env("AIDT__JOBS__BO_05_006__SMTP__PORT", &port)
            .env("AIDT__JOBS__BO_05_006__SMTP__USERNAME", "batch")
            .env("AIDT__JOBS__BO_05_006__SMTP__PASSWORD", pw)
            .output()
            .unwrap()
    };

    let wrong = "wrong-pw-0a9c";
    let out = run(wrong);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("535"), "{}", stderr(&out));
    assert!(sink.messages().is_empty());

    let out = run(password);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sink.messages().len(), 3);

    let history: Vec<String> = sqlx::query_scalar(
        "SELECT concat(params::text, details::text, error_msg) FROM batch_job_run",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    for text in history
        .iter()
        .map(String::as_str)
        .chain([stdout(&out).as_str(), stderr(&out).as_str()])
    {
        assert!(!text.contains(password) && !text.contains(wrong), "{text}");
    }
}

#[tokio::test]
async fn starttls_is_required_and_the_servers_certificate_checked_against_the_configured_ca_file() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let tls = tempfile::tempdir().unwrap();
    let (cert, key) = (tls.path().join("cert.pem"), tls.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // A server certificate, not a CA's (rustls refuses a CA as end entity).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // The sink refuses MAIL before STARTTLS.
    let sink = Sink::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let run = |ca: Option<&Path>| {
        let mut cmd = env.command(&["bo-05-006", "--date", RUN_DATE]);
        cmd.env("AIDT__JOBS__BO_05_006__SMTP__PORT", sink.port.to_string())
            .env("AIDT__JOBS__BO_05_006__SMTP__SECURITY", "starttls");
        if let Some(ca) = ca {
            cmd.env("AIDT__JOBS__BO_05_006__SMTP__CA_FILE", ca);
        }
        cmd.output().unwrap()
    };

    // A certificate no trusted CA signed: refused before anything is sent.
    let out = run(None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{} (STARTTLS)", sink.port)),
        "{}",
        stderr(&out)
    );
    assert!(sink.messages().is_empty());
    assert!(hist(env.pg()).await.is_empty());

    let out = run(Some(&cert));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(hist(env.pg()).await.len(), 3);
}

#[tokio::test]
async fn an_old_week_keeps_its_login_user_rows_once_its_logins_are_past_retention() {
    let mut env = TestEnv::new().await;
    let world = setup(&env).await;
    let sink = Sink::start(&[]);
    use_smtp(&mut env, sink.port, None);
    env.run_ok("BO-05-006", Some(date(RUN_DATE)), false).await;
    let week_rows = || async {
        let rows: Vec<(NaiveDate, String, String, i32)> = sqlx::query_as(
            "SELECT period_start, user_type, school_level, login_user_cnt
               FROM tb_bo_lms_login_user_stats WHERE period_type = 'W' ORDER BY 1, 2, 3",
        )
        .fetch_all(env.pg())
        .await
        .unwrap();
        rows
    };
    let before = week_rows().await;

    // LMS-01-001's retention deletes the logins before Wednesday of the
    // reported week: the week before has none left.
    sqlx::query("DELETE FROM tb_lms_login_hist WHERE login_at < $1")
        .bind(kst("2026-03-04T00:00:00"))
        .execute(env.pg())
        .await
        .unwrap();
    let outcome = env
        .run_job_with(
            "BO-05-006",
            Some(date(RUN_DATE)),
            false,
            &["--to", "copy@aidt.test"],
        )
        .await;
    assert_eq!(outcome.exit, Exit::Success);
    assert_eq!(week_rows().await, before, "the week rows are kept");
    let copy = sink.messages().pop().unwrap();
    assert_eq!(copy.to, "copy@aidt.test");
    assert_figures(
        &copy,
        &expected(&world, date(WEEK)),
        &expected(&world, date(PREVIOUS)),
    );
}

#[tokio::test]
async fn a_recipient_added_while_the_run_reads_the_recipients_gets_the_mail_and_no_figure_underflows(
) {
    let mut env = TestEnv::new().await;
    setup(&env).await;
    let sink = Sink::start(&[]);
    use_smtp(&mut env, sink.port, None);

    // Hold tb_bo_mail_send_hist so that the run blocks when it reads it,
    // add a recipient while it waits, then let it go on.
    let mut locker = env.pg().begin().await.unwrap();
    sqlx::query("LOCK TABLE tb_bo_mail_send_hist IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let run = env.run_job("BO-05-006", Some(date(RUN_DATE)), false);
    let race = async {
        env.wait_until(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE datname = current_database() AND wait_event_type = 'Lock'
                               AND query LIKE '%tb_bo_mail_send_hist%')",
            std::time::Duration::from_secs(60),
        )
        .await;
        sqlx::query(
            "INSERT INTO tb_bo_mail_recipient (email, rcpt_nm, active_yn) VALUES ('new@aidt.test', '신규', 'Y')",
        )
        .execute(env.pg())
        .await
        .unwrap();
        locker.commit().await.unwrap();
    };
    let (outcome, ()) = tokio::join!(run, race);

    assert_eq!(outcome.exit, Exit::Success);
    let details = env.details(outcome.run_id.unwrap()).await;
    assert_eq!(
        (&details["recipients_active"], &details["already_sent"]),
        (&serde_json::json!(4), &serde_json::json!(0))
    );
    let mut to: Vec<String> = sink.messages().into_iter().map(|m| m.to).collect();
    to.sort();
    assert_eq!(
        to,
        [
            "cto@aidt.test",
            "data@aidt.test",
            "new@aidt.test",
            "ops@aidt.test"
        ]
    );
}
