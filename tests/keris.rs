//! The KERIS client against the KERIS simulator, in-process over real HTTP
//! on loopback: request shapes, one statement per chunk, partial failures,
//! duplicates, token expiry, retries, 429, resume, and secrets kept out of
//! Debug, errors and logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aidt_batch::keris::{
    AchievementLevel, ClientOptions, CompleteRequest, InitializedRequest, KerisClient, KerisError,
    Partner, ProgressRequest, ScoreRequest, StudentAccessToken, TerminatedRequest, Transfer,
    XAPI_DUP_ERR, XAPI_VAL_ERR,
};
use chrono::{DateTime, FixedOffset};
use keris_simulator::{
    self as simulator, bench::sample_statement, Faults, SimulatorConfig, SimulatorHandle,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

const PARTNER_ID: &str = "5f1c8a9e-3b7d-4e21-9a0c-6d2f1c3f8a01";
const OTHER_PARTNER_ID: &str = "0b8d2c7e-1111-4a2b-8c3d-4e5f6a7b8c9d";
const STUDENT_TOKEN: &str = "student-launch-token-6Zq93xVv";
const PARTNER_NAME: &str = "brand-a";

async fn start_sim(config: SimulatorConfig) -> SimulatorHandle {
    simulator::start(config).await.expect("start the simulator")
}

async fn sim() -> SimulatorHandle {
    start_sim(SimulatorConfig::default()).await
}

/// Fast retries so the fault tests take milliseconds; no rate limit.
fn fast_options() -> ClientOptions {
    ClientOptions {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        requests_per_second: 0.0,
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn client_with(sim: &SimulatorHandle, partner_id: &str, options: ClientOptions) -> KerisClient {
    KerisClient::new(
        &sim.base_url(),
        Partner::new(PARTNER_NAME, SecretString::from(partner_id.to_string())),
        options,
    )
    .expect("build the client")
}

fn client(sim: &SimulatorHandle) -> KerisClient {
    client_with(sim, PARTNER_ID, fast_options())
}

/// `n` valid statements with fresh ids, as (id, bytes).
fn statements(n: usize) -> (Vec<Uuid>, Vec<Vec<u8>>) {
    let user = Uuid::new_v4();
    (0..n)
        .map(|i| {
            let id = Uuid::new_v4();
            (id, sample_statement(id, PARTNER_ID, user, i as u64))
        })
        .unzip()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn edit(bytes: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = json(bytes);
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn at() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2026-03-05T09:10:00+09:00").unwrap()
}

fn student() -> StudentAccessToken {
    StudentAccessToken::new(STUDENT_TOKEN, "access-1")
}

#[tokio::test]
async fn dashboard_calls_send_partner_id_api_version_and_typed_bodies() {
    let sim = sim().await;
    let client = client(&sim);
    let user = Uuid::new_v4();

    client
        .initialized(&InitializedRequest {
            access_token: student(),
            user_id: user,
            timestamp: at(),
            lecture_code: "L-1".into(),
        })
        .await
        .unwrap();
    client
        .terminated(&TerminatedRequest {
            access_token: student(),
            user_id: user,
            timestamp: at(),
            lecture_code: "L-1".into(),
            duration: 1800,
        })
        .await
        .unwrap();
    client
        .curriculum_progress(&ProgressRequest {
            access_token: student(),
            user_id: user,
            timestamp: at(),
            curriculum: "E4MATA01B01C01".into(),
            percent: 62.5,
        })
        .await
        .unwrap();
    client
        .curriculum_complete(&CompleteRequest {
            access_token: student(),
            user_id: user,
            timestamp: at(),
            curriculum: "E4MATA01B01".into(),
        })
        .await
        .unwrap();
    let answer = client
        .curriculum_score(&ScoreRequest {
            access_token: student(),
            user_id: user,
            timestamp: at(),
            curriculum: "M1MATA02".into(),
            score: 91.0,
            achievement_level: AchievementLevel::A,
        })
        .await
        .unwrap();
    assert_eq!(answer.code, "00000");

    let requests = sim.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/aidt_dashboard/initialized",
            "/aidt_dashboard/terminated",
            "/aidt_dashboard/curriculum_progress",
            "/aidt_dashboard/curriculum_complete",
            "/aidt_dashboard/curriculum_score"
        ]
    );
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("Partner-ID"), Some(PARTNER_ID), "{}", r.path);
        assert_eq!(r.header("API-version"), Some("2.4"), "{}", r.path);
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json"),
            "{}",
            r.path
        );
        let body = r.body.as_ref().expect("JSON body");
        assert_eq!(
            body["access_token"],
            serde_json::json!({"token": STUDENT_TOKEN, "access_id": "access-1"})
        );
        assert_eq!(body["user_id"], user.to_string());
        assert_eq!(body["timestamp"], "2026-03-05T09:10:00.000+09:00");
    }
    assert_eq!(requests[0].body.as_ref().unwrap()["lecture_code"], "L-1");
    assert_eq!(requests[1].body.as_ref().unwrap()["duration"], 1800);
    assert_eq!(requests[2].body.as_ref().unwrap()["percent"], 62.5);
    assert_eq!(
        requests[3].body.as_ref().unwrap()["curriculum"],
        "E4MATA01B01"
    );
    let score = requests[4].body.as_ref().unwrap();
    assert_eq!(
        (score["score"].as_f64(), score["achievement_level"].as_str()),
        (Some(91.0), Some("A"))
    );

    let events = sim.dashboard_events();
    let apis: Vec<&str> = events.iter().map(|e| e.api.as_str()).collect();
    assert_eq!(
        apis,
        ["API-001", "API-002", "API-003", "API-004", "API-005"]
    );
    assert!(events
        .iter()
        .all(|e| e.user_id == user && e.partner_id == PARTNER_ID));
}

#[tokio::test]
async fn invalid_dashboard_fields_are_permanent_40001() {
    let sim = sim().await;
    let err = client(&sim)
        .curriculum_progress(&ProgressRequest {
            access_token: student(),
            user_id: Uuid::new_v4(),
            timestamp: at(),
            curriculum: "E4MATB01".into(),
            percent: 50.0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KerisError::Permanent { code, .. } if code == "40001"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(sim.dashboard_events().is_empty());
}

#[tokio::test]
async fn open_transfer_returns_a_long_jwt_and_a_fresh_transfer_is_at_index_zero() {
    let sim = sim().await;
    let client = client(&sim);

    let transfer = client.open_transfer().await.unwrap();

    let token = transfer.partner_access_token.expose_secret();
    assert!(
        token.len() > 256 && token.split('.').count() == 3,
        "{} chars",
        token.len()
    );
    let open = &sim.requests()[0];
    assert_eq!(open.path, "/aidt_rawdata/get_transfer_id");
    assert_eq!(open.header("Partner-ID"), Some(PARTNER_ID));
    assert_eq!(open.header("API-version"), Some("2.4"));
    let status = client.transfer_status(&transfer.transfer_id).await.unwrap();
    assert_eq!((status.index, status.next_index()), (0, 1));
    let status_request = &sim.requests()[1];
    assert_eq!(
        status_request.body.as_ref().unwrap()["transfer_id"],
        transfer.transfer_id
    );
    assert_eq!(
        status_request.header("Content-Type"),
        Some("application/json")
    );
}

#[tokio::test]
async fn send_statements_sends_each_statement_as_its_own_http_chunk() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (ids, mut batch) = statements(7);
    // Sizes that differ, including one statement of about 40 KB.
    batch[3] = edit(&batch[3], |v| {
        v["object"]["definition"]["description"] = "x".repeat(40_000).into()
    });

    let answer = client.send_statements(&transfer, 1, &batch).await.unwrap();

    assert_eq!(answer.code, "00000");
    assert!(answer.list_error.is_empty(), "{:?}", answer.list_error);
    assert_eq!(answer.transfer_id, transfer.transfer_id);
    let send = sim
        .requests()
        .into_iter()
        .find(|r| r.api.as_deref() == Some("API-007"))
        .unwrap();
    assert_eq!(send.chunks, Some(7), "one chunk per statement");
    assert_eq!(send.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(
        send.header("Transfer-Id"),
        Some(transfer.transfer_id.as_str())
    );
    assert_eq!(
        send.header("Partner-Access-Token"),
        Some(transfer.partner_access_token.expose_secret())
    );
    assert_eq!(send.header("Chunked-Index"), Some("1"));
    assert_eq!(send.header("Partner-ID"), Some(PARTNER_ID));
    assert_eq!(send.header("API-version"), Some("2.4"));
    assert_eq!(
        send.header("Content-Type"),
        None,
        "API-007 has no JSON content type"
    );
    let stats = sim.stats().partner(PARTNER_ID);
    assert_eq!((stats.chunks_received, stats.statements_accepted), (7, 7));
    for (id, bytes) in ids.iter().zip(&batch) {
        let stored = sim.statement(*id).expect("stored");
        assert_eq!(stored.statement, json(bytes));
        assert_eq!(stored.transfer_id, transfer.transfer_id);
    }
    assert_eq!(sim.statement(ids[6]).unwrap().index, 7);
}

#[tokio::test]
async fn rejected_statements_are_listed_with_absolute_indices_and_the_rest_stored() {
    let (reject_me, _) = statements(1);
    let sim = start_sim(SimulatorConfig {
        faults: Faults {
            reject_statement_ids: reject_me.clone(),
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (_, first) = statements(5);
    client.send_statements(&transfer, 1, &first).await.unwrap();

    let (ids, mut second) = statements(5);
    second[0] = sample_statement(reject_me[0], PARTNER_ID, Uuid::new_v4(), 0); // index 6: fault-injected
    second[1] = edit(&second[1], |v| {
        v["verb"]["id"] = "http://aidtbook.kr/xapi/profiles/media/1.0/verbs/submitted".into()
    }); // index 7
    second[3] = edit(&second[3], |v| {
        drop(v.as_object_mut().unwrap().remove("timestamp"))
    }); // index 9
    second[4] = b"{not json".to_vec(); // index 10
    let answer = client.send_statements(&transfer, 6, &second).await.unwrap();

    assert_eq!(answer.code, "00000");
    let rejected: Vec<(u64, &str)> = answer
        .list_error
        .iter()
        .map(|e| (e.index, e.code.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            (6, XAPI_VAL_ERR),
            (7, XAPI_VAL_ERR),
            (9, XAPI_VAL_ERR),
            (10, XAPI_VAL_ERR)
        ]
    );
    assert!(
        answer.list_error[1].message.contains("verb"),
        "{}",
        answer.list_error[1].message
    );
    assert!(
        answer.list_error[2].message.contains("timestamp"),
        "{}",
        answer.list_error[2].message
    );
    assert!(sim.statement(ids[2]).is_some(), "index 8 is stored");
    assert!(sim.statement(ids[1]).is_none());
    let stats = sim.stats().partner(PARTNER_ID);
    assert_eq!(
        (stats.statements_accepted, stats.statements_rejected),
        (6, 4)
    );
    assert_eq!(
        client
            .transfer_status(&transfer.transfer_id)
            .await
            .unwrap()
            .index,
        10
    );
}

#[tokio::test]
async fn statements_of_another_partner_or_in_the_future_are_rejected() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (_, mut batch) = statements(3);
    batch[0] = sample_statement(Uuid::new_v4(), OTHER_PARTNER_ID, Uuid::new_v4(), 0);
    batch[2] = edit(&batch[2], |v| {
        v["timestamp"] = "2999-01-01T00:00:00.000+09:00".into()
    });

    let answer = client.send_statements(&transfer, 1, &batch).await.unwrap();

    let rejected: Vec<u64> = answer.list_error.iter().map(|e| e.index).collect();
    assert_eq!(rejected, [1, 3]);
    assert!(answer
        .list_error
        .iter()
        .all(|e| !e.message.contains(PARTNER_ID) && !e.message.contains(OTHER_PARTNER_ID)));
}

#[tokio::test]
async fn a_duplicate_with_the_same_content_is_accepted_and_with_other_content_rejected() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (ids, batch) = statements(2);
    client.send_statements(&transfer, 1, &batch).await.unwrap();

    // Same content: byte-identical, and re-serialized with other key order
    // and whitespace; other content: same id, another score.
    let mut reordered = String::from("{");
    let obj = json(&batch[0]);
    let members: Vec<String> = obj
        .as_object()
        .unwrap()
        .iter()
        .rev()
        .map(|(k, v)| {
            format!(
                "\n  {}: {}",
                serde_json::to_string(k).unwrap(),
                serde_json::to_string(v).unwrap()
            )
        })
        .collect();
    reordered.push_str(&members.join(","));
    reordered.push_str("\n}");
    assert_ne!(reordered.as_bytes(), batch[0].as_slice());
    let changed = edit(&batch[1], |v| v["result"]["score"]["raw"] = 10.into());
    let resend = vec![batch[0].clone(), reordered.into_bytes(), changed];
    let answer = client.send_statements(&transfer, 3, &resend).await.unwrap();

    assert_eq!(answer.list_error.len(), 1, "{:?}", answer.list_error);
    assert_eq!(
        (
            answer.list_error[0].index,
            answer.list_error[0].code.as_str()
        ),
        (5, XAPI_DUP_ERR)
    );
    let stats = sim.stats().partner(PARTNER_ID);
    assert_eq!(
        (
            stats.statements_accepted,
            stats.statements_duplicate,
            stats.statements_rejected
        ),
        (2, 2, 1)
    );
    assert_eq!(
        sim.statement(ids[1]).unwrap().statement,
        json(&batch[1]),
        "the first content stays"
    );
}

#[tokio::test]
async fn an_expired_token_is_token_expired_and_a_new_transfer_continues() {
    let sim = start_sim(SimulatorConfig {
        token_ttl: Duration::from_secs(1),
        ..SimulatorConfig::default()
    })
    .await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (_, batch) = statements(4);
    client
        .send_statements(&transfer, 1, &batch[..2])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let err = client
        .send_statements(&transfer, 3, &batch[2..])
        .await
        .unwrap_err();

    assert!(err.is_token_expired(), "{err}");
    assert!(!err.is_transient());
    assert_eq!(
        sim.stats().partner(PARTNER_ID).calls["API-007"].requests,
        2,
        "not retried"
    );
    let renewed = client.open_transfer().await.unwrap();
    let answer = client
        .send_statements(&renewed, 1, &batch[2..])
        .await
        .unwrap();
    assert!(answer.list_error.is_empty());
    assert_eq!(sim.stats().partner(PARTNER_ID).statements_accepted, 4);
}

#[tokio::test]
async fn a_token_of_another_transfer_an_unknown_transfer_or_a_closed_transfer_is_refused() {
    let sim = sim().await;
    let client = client(&sim);
    let first = client.open_transfer().await.unwrap();
    let second = client.open_transfer().await.unwrap();
    let (_, batch) = statements(1);
    let mixed = Transfer {
        partner_access_token: second.partner_access_token.clone(),
        ..first.clone()
    };

    assert!(client
        .send_statements(&mixed, 1, &batch)
        .await
        .unwrap_err()
        .is_token_expired());
    let unknown = Transfer {
        transfer_id: Uuid::new_v4().to_string(),
        ..first.clone()
    };
    assert!(client
        .send_statements(&unknown, 1, &batch)
        .await
        .unwrap_err()
        .is_token_expired());

    assert!(sim.close_transfer(&first.transfer_id));
    let err = client.send_statements(&first, 1, &batch).await.unwrap_err();
    assert!(
        matches!(&err, KerisError::Permanent { code, .. } if code == "40901"),
        "{err}"
    );
    let err = client
        .transfer_status("no-such-transfer")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KerisError::Permanent { code, .. } if code == "40401"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unknown_partner_id_is_refused_with_40101() {
    let sim = start_sim(SimulatorConfig {
        partners: vec![OTHER_PARTNER_ID.into()],
        ..SimulatorConfig::default()
    })
    .await;

    let err = client(&sim).open_transfer().await.unwrap_err();

    assert!(
        matches!(&err, KerisError::Permanent { code, .. } if code == "40101"),
        "{err}"
    );
    assert!(client_with(&sim, OTHER_PARTNER_ID, fast_options())
        .open_transfer()
        .await
        .is_ok());
}

#[tokio::test]
async fn server_errors_and_resets_are_retried_with_the_same_chunked_index_until_success() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (_, first) = statements(2);
    client.send_statements(&transfer, 1, &first).await.unwrap();
    sim.set_faults(Faults {
        only_apis: vec!["API-007".into()],
        reset_next: 1,
        server_error_next: 2,
        stored_before_error_share: 0.0,
        ..Faults::default()
    });
    let (_, batch) = statements(3);

    let answer = client.send_statements(&transfer, 3, &batch).await.unwrap();

    assert!(answer.list_error.is_empty());
    let sends: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.api.as_deref() == Some("API-007"))
        .skip(1)
        .collect();
    let statuses: Vec<u16> = sends.iter().map(|r| r.http_status).collect();
    assert_eq!(statuses, [0, 500, 500, 200], "reset, two 5xx, success");
    assert!(sends.iter().all(|r| r.header("Chunked-Index") == Some("3")));
    assert!(sends[1..].iter().all(|r| r.chunks == Some(3)));
    let stats = sim.stats().partner(PARTNER_ID);
    assert_eq!(
        (stats.statements_accepted, stats.statements_duplicate),
        (5, 0)
    );
    assert_eq!(sim.transfer_index(&transfer.transfer_id), Some(5));
}

#[tokio::test]
async fn a_5xx_after_storing_is_retried_and_the_resend_is_taken_as_duplicates() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    sim.set_faults(Faults {
        only_apis: vec!["API-007".into()],
        server_error_next: 1,
        stored_before_error_share: 1.0,
        ..Faults::default()
    });
    let (_, batch) = statements(4);

    let answer = client.send_statements(&transfer, 1, &batch).await.unwrap();

    assert!(answer.list_error.is_empty(), "{:?}", answer.list_error);
    let stats = sim.stats().partner(PARTNER_ID);
    assert_eq!(
        (stats.statements_accepted, stats.statements_duplicate),
        (4, 4)
    );
    assert_eq!(stats.calls["API-007"].answers.get("50001"), Some(&1));
}

#[tokio::test]
async fn exhausted_retries_return_a_transient_error() {
    let sim = start_sim(SimulatorConfig {
        faults: Faults {
            server_error_share: 1.0,
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await;
    let client = client_with(
        &sim,
        PARTNER_ID,
        ClientOptions {
            max_attempts: 3,
            ..fast_options()
        },
    );

    let err = client.open_transfer().await.unwrap_err();

    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(err, KerisError::Transient { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(sim.stats().requests("API-006"), 3);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let sim = sim().await;
    let url = sim.base_url();
    sim.shutdown();
    drop(sim);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = KerisClient::new(
        &url,
        Partner::new(PARTNER_NAME, SecretString::from(PARTNER_ID.to_string())),
        ClientOptions {
            max_attempts: 2,
            ..fast_options()
        },
    )
    .unwrap();

    let err = client.open_transfer().await.unwrap_err();

    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_retried() {
    let sim = start_sim(SimulatorConfig {
        faults: Faults {
            hang_next: 1,
            hang_secs: 4.0,
            stored_before_error_share: 1.0,
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await;
    let client = client_with(
        &sim,
        PARTNER_ID,
        ClientOptions {
            request_timeout: Duration::from_secs(1),
            ..fast_options()
        },
    );
    let started = Instant::now();

    let transfer = client.open_transfer().await.unwrap();

    assert!(started.elapsed() >= Duration::from_secs(1));
    // The hung answer would have been a success: a second request means the
    // client gave up on it at its own timeout instead of waiting.
    assert_eq!(
        sim.stats().requests("API-006"),
        2,
        "timed out, then retried"
    );
    assert_eq!(
        sim.stats().partner(PARTNER_ID).transfers_opened,
        2,
        "the hung open was processed too"
    );
    assert!(client.transfer_status(&transfer.transfer_id).await.is_ok());
}

#[tokio::test]
async fn http_429_with_retry_after_makes_the_client_wait_at_least_that_long() {
    let sim = start_sim(SimulatorConfig {
        faults: Faults {
            too_many_requests_next: 1,
            retry_after_secs: 1,
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await;
    let client = client(&sim);
    let started = Instant::now();

    client.open_transfer().await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let answers = &sim.stats().partner(PARTNER_ID).calls["API-006"].answers;
    assert_eq!(
        (answers.get("42901"), answers.get("00000")),
        (Some(&1), Some(&1))
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_clients_limit_ends_the_call_as_transient() {
    let sim = start_sim(SimulatorConfig {
        faults: Faults {
            too_many_requests_next: 1,
            retry_after_secs: 120,
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await;

    let err = client(&sim).open_transfer().await.unwrap_err();

    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn the_simulators_rate_limit_answers_429_and_the_client_gets_through() {
    let sim = start_sim(SimulatorConfig {
        rate_limit: Some(2.0),
        ..SimulatorConfig::default()
    })
    .await;
    let client = client(&sim);

    for _ in 0..3 {
        client.open_transfer().await.unwrap();
    }

    let answers = &sim.stats().partner(PARTNER_ID).calls["API-006"].answers;
    assert_eq!(answers.get("00000"), Some(&3));
    assert!(answers.get("42901").is_some_and(|n| *n >= 1), "{answers:?}");
}

#[tokio::test]
async fn transfer_status_returns_the_last_stored_index_and_resuming_continues_from_it() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (_, batch) = statements(7);
    client
        .send_statements(&transfer, 1, &batch[..3])
        .await
        .unwrap();
    client
        .send_statements(&transfer, 4, &batch[3..5])
        .await
        .unwrap();

    let status = client.transfer_status(&transfer.transfer_id).await.unwrap();

    assert_eq!((status.index, status.next_index()), (5, 6));
    let resumed = status.into_transfer().expect("status carries the token");
    client
        .send_statements(&resumed, 6, &batch[5..])
        .await
        .unwrap();
    assert_eq!(
        client
            .transfer_status(&transfer.transfer_id)
            .await
            .unwrap()
            .index,
        7
    );
    // A gap in Chunked-Index is refused as a whole.
    let (_, more) = statements(1);
    let err = client
        .send_statements(&resumed, 20, &more)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KerisError::Permanent { code, .. } if code == "40001"),
        "{err}"
    );
}

#[tokio::test]
async fn more_statements_than_the_simulator_allows_per_request_is_40001() {
    let sim = start_sim(SimulatorConfig {
        max_statements_per_request: 3,
        ..SimulatorConfig::default()
    })
    .await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (_, batch) = statements(4);

    let err = client
        .send_statements(&transfer, 1, &batch)
        .await
        .unwrap_err();

    assert!(
        matches!(&err, KerisError::Permanent { code, .. } if code == "40001"),
        "{err}"
    );
    assert_eq!(sim.stats().partner(PARTNER_ID).statements_accepted, 0);
    // The client refuses more than its own limit before sending.
    let small = client_with(
        &sim,
        PARTNER_ID,
        ClientOptions {
            max_statements_per_request: 3,
            ..fast_options()
        },
    );
    assert!(matches!(
        small.send_statements(&transfer, 1, &batch).await,
        Err(KerisError::InvalidRequest { .. })
    ));
}

#[tokio::test]
async fn operator_endpoints_report_and_change_the_simulator() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (ids, batch) = statements(3);
    client.send_statements(&transfer, 1, &batch).await.unwrap();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{}{path}", sim.base_url()));
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };

    let stats = get("/_sim/stats").await;
    assert_eq!(stats["partners"][PARTNER_ID]["statements_accepted"], 3);
    let listed = get("/_sim/statements?limit=2").await;
    let listed_ids: Vec<&str> = listed["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids, [ids[1].to_string(), ids[2].to_string()]);
    let set = http
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&serde_json::json!({"server_error_next": 2, "seed": 9}))
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());
    assert_eq!(sim.faults().server_error_next, 2);
    assert_eq!(get("/_sim/faults").await["seed"], 9);
    let bad = http
        .post(format!("{}/_sim/faults", sim.base_url()))
        .body("{\"nope\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    http.post(format!("{}/_sim/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get("/_sim/stats").await["partners"], serde_json::json!({}));
    assert_eq!(
        get("/_sim/dashboard").await["events"],
        serde_json::json!([])
    );
}

/// A `MakeWriter` collecting formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output_error_messages_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Current-thread runtime: every future of this test runs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = sim().await;
    let client = client_with(
        &sim,
        PARTNER_ID,
        ClientOptions {
            max_attempts: 2,
            ..fast_options()
        },
    );
    let transfer = client.open_transfer().await.unwrap();
    let token = transfer.partner_access_token.expose_secret().to_string();
    let (_, batch) = statements(2);
    sim.set_faults(Faults {
        server_error_next: 1,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    client.send_statements(&transfer, 1, &batch).await.unwrap();
    let request = ScoreRequest {
        access_token: student(),
        user_id: Uuid::new_v4(),
        timestamp: at(),
        curriculum: "E4MATA01".into(),
        score: 150.0,
        achievement_level: AchievementLevel::A,
    };
    let permanent = client.curriculum_score(&request).await.unwrap_err();
    sim.set_faults(Faults {
        server_error_share: 1.0,
        ..Faults::default()
    });
    let transient = client
        .transfer_status(&transfer.transfer_id)
        .await
        .unwrap_err();
    sim.set_faults(Faults::default());
    sim.expire_tokens();
    let expired = client
        .send_statements(&transfer, 3, &batch)
        .await
        .unwrap_err();
    let status = {
        sim.set_faults(Faults::default());
        client.transfer_status(&transfer.transfer_id).await.unwrap()
    };

    let mut exposed = vec![
        format!("{client:?}"),
        format!("{transfer:?}"),
        format!("{status:?}"),
        format!("{request:?}"),
        format!("{:?}", student()),
        format!(
            "{:?}",
            Partner::new(PARTNER_NAME, SecretString::from(PARTNER_ID.to_string()))
        ),
    ];
    for err in [&permanent, &transient, &expired] {
        exposed.push(err.to_string());
        exposed.push(format!("{err:?}"));
        exposed.push(format!("{:#}", anyhow::Error::msg(err.to_string())));
    }
    let log_text = logs.text();
    exposed.push(log_text.clone());
    for text in &exposed {
        for secret in [PARTNER_ID, token.as_str(), STUDENT_TOKEN] {
            assert!(!text.contains(secret), "a secret leaked into: {text}");
        }
    }
    // The capture did see the client's logs, with the partner's name.
    assert!(
        log_text.contains("retrying") && log_text.contains(PARTNER_NAME),
        "{log_text}"
    );
    assert!(log_text.contains("API-007"), "{log_text}");
    assert!(
        permanent.to_string().contains("40001")
            && expired.is_token_expired()
            && transient.is_transient()
    );
}

/// Ingest rate of the simulator with the real client. Meaningful in release
/// mode only: `cargo test --release --test main keris::simulator_ingest -- --ignored --nocapture`
/// (or `scripts/bench-simulator`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run in release mode"]
async fn simulator_ingest_rate_with_the_client() {
    let sim = start_sim(SimulatorConfig {
        record_statements: false,
        ..SimulatorConfig::default()
    })
    .await;
    let options = simulator::bench::BenchOptions {
        statements: 200_000,
        per_request: 500,
        senders: 4,
        raw: false,
        partner_id: PARTNER_ID.into(),
    };

    let report = simulator::bench::run(&sim.base_url(), &options)
        .await
        .unwrap();

    println!("{:.0} statements/s ({report:?})", report.per_second());
    assert_eq!(sim.stats().partner(PARTNER_ID).statements_accepted, 200_000);
    assert!(
        report.per_second() >= 50_000.0,
        "{:.0} statements/s",
        report.per_second()
    );
}

#[tokio::test]
async fn a_proxys_html_page_is_a_permanent_refusal_quoting_a_short_excerpt_without_secrets() {
    let sim = sim().await;
    let client = client(&sim);
    let transfer = client.open_transfer().await.unwrap();
    let (ids, bodies) = statements(4);
    // A proxy refuses requests carrying the third statement (413, HTML).
    sim.set_faults(Faults {
        proxy_status: 413,
        proxy_statement_ids: vec![ids[2]],
        ..Faults::default()
    });
    let err = client
        .send_statements(&transfer, 1, &bodies)
        .await
        .unwrap_err();
    let KerisError::Permanent {
        http_status,
        code,
        message,
        ..
    } = &err
    else {
        panic!("a permanent refusal: {err}");
    };
    assert_eq!((*http_status, code.as_str()), (413, "HTTP 413"));
    assert!(message.starts_with("413 Payload Too Large"), "{message}");
    assert!(
        message.len() <= 3 * 161 && !message.contains('<'),
        "{message}"
    );
    let text = err.to_string();
    assert!(
        !text.contains(PARTNER_ID) && !text.contains(transfer.partner_access_token.expose_secret()),
        "the page quotes the Partner-ID; the error must not: {text}"
    );
    assert_eq!(
        sim.transfer_index(&transfer.transfer_id),
        Some(0),
        "nothing stored"
    );
    // Without that statement the proxy lets the request through, at the
    // same index: the refusal stored nothing.
    let rest = [bodies[0].clone(), bodies[1].clone(), bodies[3].clone()];
    let answer = client.send_statements(&transfer, 1, &rest).await.unwrap();
    assert!(answer.list_error.is_empty());
    assert_eq!(sim.transfer_index(&transfer.transfer_id), Some(3));

    // A firewall in front of everything: API-006 gets its page too.
    sim.set_faults(Faults {
        proxy_status: 403,
        ..Faults::default()
    });
    let err = client.open_transfer().await.unwrap_err();
    assert!(
        matches!(&err, KerisError::Permanent { http_status: 403, code, .. } if code == "HTTP 403"),
        "{err}"
    );
    assert!(err.to_string().contains("403 Forbidden"), "{err}");
    assert!(!err.to_string().contains(PARTNER_ID), "{err}");
}
