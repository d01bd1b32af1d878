//! LRS-01-001: aggregation of the day's statements into keris_batch_data.

use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::xapi;
use aidt_dev::seed::{self, stored_key, SeedArgs};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{date, TestEnv};

const ID: &str = "LRS-01-001";
const DAY: &str = "2026-03-05";
const USER: &str = "11111111-1111-4111-8111-111111111111";
const PARTNER: &str = "22222222-2222-4222-8222-222222222222";
const ITEM: &str = "https://aidt.example.kr/content/c1/item/i1";

fn verb(area: &str, verb: &str) -> String {
    format!("http://aidtbook.kr/xapi/profiles/{area}/1.0/verbs/{verb}")
}

/// A source document as the LRS stores it; `at` is "HH:MM" on DAY, Seoul time.
fn source(
    user: &str,
    verb_id: &str,
    object: &str,
    at: &str,
    result: Option<Document>,
    voided: bool,
) -> Document {
    source_on(DAY, user, verb_id, object, at, result, voided)
}

fn source_on(
    day: &str,
    user: &str,
    verb_id: &str,
    object: &str,
    at: &str,
    result: Option<Document>,
    voided: bool,
) -> Document {
    let ts = chrono::DateTime::parse_from_rfc3339(&format!("{day}T{at}:00.000+09:00")).unwrap();
    let mut statement = doc! {
        "actor": { "objectType": "Agent", "account": { "homePage": "https://aidt.example.kr", "name": user } },
        "verb": { "id": verb_id, "display": { "en-US": verb_id.rsplit('/').next().unwrap() } },
        "object": { "id": object, "objectType": "Activity", "definition": { "type": "http://aidtbook.kr/xapi/activity-type/question" } },
        "context": { "platform": "aidt-demo", "extensions": { stored_key(xapi::EXT_PARTNER_ID): PARTNER } },
        "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
    };
    if let Some(r) = result {
        statement.insert("result", r);
    }
    doc! {
        "statement": statement,
        "user_id": user,
        "partner_id": PARTNER,
        "timestamp": Bson::DateTime(mongodb::bson::DateTime::from_millis(ts.timestamp_millis())),
        "stored": Bson::DateTime(mongodb::bson::DateTime::from_millis(ts.timestamp_millis())),
        "voided": voided,
    }
}

fn answer(score: i32, success: bool, duration: &str, std: &str, level: &str) -> Document {
    doc! {
        "score": { "raw": score }, "success": success, "duration": duration,
        "extensions": { stored_key(xapi::EXT_CURRICULUM_STANDARD): [ { "id": std, "achievement-level": level } ] },
    }
}

async fn insert(env: &TestEnv, docs: Vec<Document>) {
    env.app
        .mongo
        .collection::<Document>("statements")
        .insert_many(docs)
        .await
        .unwrap();
}

async fn batch_docs(env: &TestEnv) -> Vec<Document> {
    env.app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn wire(d: &Document) -> Value {
    serde_json::from_slice(&xapi::keris_statement_bytes(
        d.get_document("statement").unwrap(),
    ))
    .unwrap()
}

async fn counts(pg: &PgPool, run_id: i64) -> (i64, i64, i64) {
    sqlx::query_as("SELECT read_cnt, write_cnt, skip_cnt FROM batch_job_run WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pg)
        .await
        .unwrap()
}

async fn hand_made(env: &TestEnv) {
    let submitted = verb("assessment", "submitted");
    insert(
        env,
        vec![
            source(
                USER,
                &submitted,
                ITEM,
                "10:00",
                Some(answer(40, false, "PT1M30S", "E4MATA01B01C01", "C")),
                false,
            ),
            source(
                USER,
                &submitted,
                ITEM,
                "10:05",
                Some(answer(90, true, "PT30S", "E4MATA01B01C01", "A")),
                false,
            ),
            source(
                USER,
                &submitted,
                ITEM,
                "09:00",
                Some(answer(10, false, "PT5S", "E4MATA01B01C02", "B")),
                false,
            ),
            // voided, and another day: ignored
            source(
                USER,
                &submitted,
                ITEM,
                "11:00",
                Some(answer(0, false, "PT100S", "X", "C")),
                true,
            ),
            source_on(
                "2026-03-06",
                USER,
                &submitted,
                ITEM,
                "00:30",
                Some(answer(0, false, "PT100S", "X", "C")),
                false,
            ),
            source_on(
                "2026-03-04",
                USER,
                &submitted,
                ITEM,
                "23:59",
                Some(answer(0, false, "PT100S", "X", "C")),
                false,
            ),
            // a verb outside the profile
            source(
                USER,
                &verb("assessment", "answered"),
                ITEM,
                "12:00",
                None,
                false,
            ),
        ],
    )
    .await;
}

/// `d` with its extension keys as an LRS on MongoDB 5+ may store them: the
/// IRIs with their dots, not `&46;`.
fn with_dotted_keys(mut d: Document) -> Document {
    let statement = d.get_document_mut("statement").unwrap();
    for parent in ["context", "result"] {
        if let Ok(Some(ext)) = statement
            .get_document_mut(parent)
            .map(|p| p.get_document_mut("extensions").ok())
        {
            *ext = ext
                .iter()
                .map(|(k, v)| (k.replace("&46;", "."), v.clone()))
                .collect();
        }
    }
    d
}

#[tokio::test]
async fn lrs_reads_extension_keys_with_dots_as_a_mongodb_lrs_stores_them() {
    let env = TestEnv::new().await;
    let submitted = verb("assessment", "submitted");
    insert(
        &env,
        vec![
            with_dotted_keys(source(
                USER,
                &submitted,
                ITEM,
                "10:00",
                Some(answer(40, false, "PT1M", "S1", "C")),
                false,
            )),
            // the legacy encoding, beside it for the same student and item
            source(
                USER,
                &submitted,
                ITEM,
                "10:05",
                Some(answer(90, true, "PT30S", "S1", "A")),
                false,
            ),
            with_dotted_keys(source(
                USER,
                &submitted,
                ITEM,
                "09:00",
                Some(answer(10, false, "PT5S", "S2", "B")),
                false,
            )),
        ],
    )
    .await;
    // the server kept the dots (else this test would not test them)
    let kept = env
        .app
        .mongo
        .collection::<Document>("statements")
        .find_one(doc! { "statement.timestamp": { "$regex": "T10:00" } })
        .await
        .unwrap()
        .unwrap();
    let ext = kept
        .get_document("statement")
        .and_then(|s| s.get_document("context"))
        .and_then(|c| c.get_document("extensions"))
        .unwrap();
    assert!(ext.contains_key(xapi::EXT_PARTNER_ID), "{ext:?}");

    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    assert_eq!(
        counts(env.pg(), run).await,
        (3, 1, 0),
        "one READY statement of 3"
    );
    let docs = batch_docs(&env).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0].get_str("status").unwrap(), "READY", "{docs:?}");
    let s = wire(&docs[0]);
    xapi::validate(&s).unwrap();
    assert_eq!(s["context"]["extensions"][xapi::EXT_PARTNER_ID], PARTNER);
    assert_eq!(s["result"]["duration"], 60 + 30 + 5);
    assert_eq!(
        s["result"]["score"]["raw"], 90,
        "the last score by timestamp"
    );
    assert_eq!(
        s["result"]["extensions"][xapi::EXT_CURRICULUM_STANDARD],
        serde_json::json!([{"id": "S1", "achievement-level": "A"}, {"id": "S2", "achievement-level": "B"}])
    );
    assert_eq!(
        s["result"]["extensions"][&env.app.settings.jobs.lrs_aggregate.attempts_extension],
        3
    );
    // what the batch writes itself stays encoded (see xapi::encode_keys)
    let stored = docs[0].get_document("statement").unwrap();
    let ext = stored
        .get_document("context")
        .and_then(|c| c.get_document("extensions"))
        .unwrap();
    assert_eq!(
        ext.keys().collect::<Vec<_>>(),
        vec![&stored_key(xapi::EXT_PARTNER_ID)]
    );
}

#[tokio::test]
async fn an_empty_attempts_extension_leaves_attempts_out_of_valid_statements() {
    let mut env = TestEnv::new().await;
    env.configure(|s| s.jobs.lrs_aggregate.attempts_extension = String::new());
    hand_made(&env).await;
    env.run_ok(ID, Some(date(DAY)), false).await;
    let docs = batch_docs(&env).await;
    let ready = docs
        .iter()
        .find(|d| d.get_str("status").unwrap() == "READY")
        .expect("one READY statement");
    let s = wire(ready);
    let keys: Vec<&String> = s["result"]["extensions"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, vec![xapi::EXT_CURRICULUM_STANDARD], "{s}");
    xapi::validate(&s).unwrap();
}

#[tokio::test]
async fn lrs_aggregates_attempts_and_records_invalid() {
    let env = TestEnv::new().await;
    hand_made(&env).await;
    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    assert_eq!(
        counts(env.pg(), run).await,
        (4, 2, 2),
        "read 4 non-voided of the day; READY + INVALID written; voided + invalid skipped"
    );
    // Partner-IDs are credentials: the details name partners, never ids.
    let details = env.details(run).await;
    assert_eq!(
        details["per_partner"],
        serde_json::json!({ "(not configured)": { "ready": 1, "invalid": 1 } }),
        "{details}"
    );
    assert!(!details.to_string().contains(PARTNER), "{details}");
    let docs = batch_docs(&env).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    let ready: Vec<_> = docs
        .iter()
        .filter(|d| d.get_str("status").unwrap() == "READY")
        .collect();
    let invalid: Vec<_> = docs
        .iter()
        .filter(|d| d.get_str("status").unwrap() == "INVALID")
        .collect();
    assert_eq!((ready.len(), invalid.len()), (1, 1));
    assert_eq!(invalid[0].get_str("err_code").unwrap(), "UNKNOWN_VERB");
    assert!(invalid[0].get_str("err_msg").unwrap().contains("answered"));

    let r = ready[0];
    assert_eq!(r.get_str("base_dt").unwrap(), DAY);
    assert_eq!(r.get_str("user_id").unwrap(), USER);
    assert_eq!(r.get_str("partner_id").unwrap(), PARTNER);
    assert_eq!(r.get_str("area").unwrap(), "assessment");
    let s = wire(r);
    xapi::validate(&s).unwrap();
    assert_eq!(s["id"].as_str().unwrap(), r.get_str("_id").unwrap());
    assert_eq!(s["timestamp"], "2026-03-05T00:00:00.000+09:00");
    assert_eq!(s["actor"]["account"]["name"], USER);
    assert_eq!(s["result"]["duration"], 125);
    assert_eq!(
        s["result"]["score"]["raw"], 90,
        "the last score by timestamp"
    );
    assert_eq!(s["result"]["success"], true);
    assert_eq!(
        s["result"]["extensions"][&env.app.settings.jobs.lrs_aggregate.attempts_extension],
        3
    );
    let standards = &s["result"]["extensions"][xapi::EXT_CURRICULUM_STANDARD];
    assert_eq!(
        standards,
        &serde_json::json!([{"id": "E4MATA01B01C01", "achievement-level": "A"}, {"id": "E4MATA01B01C02", "achievement-level": "B"}])
    );
    assert_eq!(s["context"]["extensions"][xapi::EXT_PARTNER_ID], PARTNER);
    let expected = xapi::statement_id(
        &aidt_batch::config::DEFAULT_LRS_ID_NAMESPACE,
        date(DAY),
        USER,
        &verb("assessment", "submitted"),
        ITEM,
    );
    assert_eq!(r.get_str("_id").unwrap(), expected.to_string());
}

#[tokio::test]
async fn lrs_rerun_writes_nothing_and_keeps_sent() {
    let env = TestEnv::new().await;
    hand_made(&env).await;
    env.run_ok(ID, Some(date(DAY)), false).await;
    let first = batch_docs(&env).await;
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let ready_id = first
        .iter()
        .find(|d| d.get_str("status").unwrap() == "READY")
        .unwrap()
        .get_str("_id")
        .unwrap();
    coll.update_one(
        doc! { "_id": ready_id },
        doc! { "$set": { "status": "SENT", "transfer_id": "T1" } },
    )
    .await
    .unwrap();

    // A new attempt arrives: the SENT statement must not be reset.
    insert(
        &env,
        vec![source(
            USER,
            &verb("assessment", "submitted"),
            ITEM,
            "13:00",
            Some(answer(0, false, "PT1S", "Y", "C")),
            false,
        )],
    )
    .await;
    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    assert_eq!(counts(env.pg(), run).await.1, 0, "rerun writes nothing");
    let second = batch_docs(&env).await;
    assert_eq!(second.len(), first.len());
    let sent = second
        .iter()
        .find(|d| d.get_str("_id").unwrap() == ready_id)
        .unwrap();
    assert_eq!(sent.get_str("status").unwrap(), "SENT");
    assert_eq!(sent.get_str("transfer_id").unwrap(), "T1");
    let before = first
        .iter()
        .find(|d| d.get_str("_id").unwrap() == ready_id)
        .unwrap();
    assert_eq!(
        sent.get("statement"),
        before.get("statement"),
        "content of a SENT statement unchanged"
    );
    // ids are equal across runs
    let ids = |docs: &[Document]| {
        docs.iter()
            .map(|d| d.get_str("_id").unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&second));
}

#[tokio::test]
async fn lrs_dry_run_writes_nothing() {
    let env = TestEnv::new().await;
    hand_made(&env).await;
    let run = env.run_ok(ID, Some(date(DAY)), true).await;
    assert_eq!(counts(env.pg(), run).await.0, 4);
    assert!(batch_docs(&env).await.is_empty());
}

#[tokio::test]
async fn lrs_seed_data_aggregates_to_valid_statements() {
    let env = TestEnv::new().await;
    let report = seed::seed(&env.app, &SeedArgs::new(100, 3_000, Some(date(DAY)), 1))
        .await
        .unwrap();
    let _ = report;
    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    let docs = batch_docs(&env).await;
    assert!(!docs.is_empty());
    let details = env.details(run).await;
    let names: Vec<&String> = details["per_partner"].as_object().unwrap().keys().collect();
    assert!(
        names.contains(&&"demo".to_string()),
        "the configured partner, by name: {details}"
    );
    for (_, id) in env.app.settings.keris.partner_ids().unwrap() {
        assert!(
            !details.to_string().contains(&id.to_string()),
            "no Partner-ID in the details: {details}"
        );
    }
    let mut attempts = 0i64;
    for d in &docs {
        let s = wire(d);
        let n = s["result"]["extensions"][&env.app.settings.jobs.lrs_aggregate.attempts_extension]
            .as_i64()
            .unwrap();
        attempts += n;
        if d.get_str("status").unwrap() == "READY" {
            xapi::validate(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        } else {
            assert_eq!(d.get_str("status").unwrap(), "INVALID");
            assert!(d.get_str("err_code").is_ok());
        }
    }
    // The night covers what the LRS stored by the end of the day; the
    // seed stores a few statements hours late, after it (the next night's).
    let stmts = env.app.mongo.collection::<Document>("statements");
    let end = Bson::DateTime(mongodb::bson::DateTime::from_millis(
        aidt_batch::time::start_of_day_seoul(date("2026-03-06")).timestamp_millis(),
    ));
    let by_night = doc! { "stored": { "$lte": end.clone() } };
    let total = stmts.count_documents(by_night.clone()).await.unwrap() as i64;
    let voided = stmts
        .count_documents(doc! { "voided": true, "stored": { "$lte": end.clone() } })
        .await
        .unwrap() as i64;
    let later = stmts
        .count_documents(doc! { "voided": false, "stored": { "$gt": end.clone() } })
        .await
        .unwrap();
    assert!(later > 0, "the seed stores some statements after the night");
    assert_eq!(details["stored_after_window"], later, "{details}");
    // Students without consent past their grace period are left out.
    let rule = aidt_batch::jobs::shared::privacy::ConsentRule {
        reference_time: chrono::Utc::now(),
        grace_days: 30,
    };
    let withheld: Vec<String> =
        aidt_batch::jobs::shared::privacy::withheld_students(env.pg(), &rule)
            .await
            .unwrap()
            .iter()
            .map(|u| u.to_string())
            .collect();
    let withheld_statements = stmts
        .count_documents(doc! { "voided": false, "stored": { "$lte": end.clone() }, "user_id": { "$in": &withheld } })
        .await
        .unwrap() as i64;
    assert_eq!(
        total,
        attempts + voided + withheld_statements,
        "every source statement stored by the night is voided, withheld or in one output"
    );
    let (read, written, _) = counts(env.pg(), run).await;
    assert_eq!(read, total - voided);
    assert_eq!(written, docs.len() as i64);
}

#[tokio::test]
async fn lrs_rerun_over_many_batches_rewrites_exactly_the_changed_statements() {
    let mut env = TestEnv::new().await;
    // Batches of 25: the rerun reads back and compares many batches.
    env.configure(|s| s.jobs.lrs_aggregate.batch_size = 25);
    seed::seed(&env.app, &SeedArgs::new(60, 2_000, Some(date(DAY)), 3))
        .await
        .unwrap();
    env.run_ok(ID, Some(date(DAY)), false).await;
    let first = batch_docs(&env).await;
    assert!(first.len() > 100, "{}", first.len());
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let ready: Vec<String> = first
        .iter()
        .filter(|d| d.get_str("status").unwrap() == "READY")
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    // Stale content in READY statements spread over the day, stale reasons
    // in INVALID ones: the rerun rewrites these.
    let mut stale: Vec<String> = ready.iter().step_by(37).cloned().collect();
    for id in &stale {
        coll.update_one(
            doc! { "_id": id },
            doc! { "$set": { "statement.result.duration": 1 } },
        )
        .await
        .unwrap();
    }
    let invalid: Vec<String> = first
        .iter()
        .filter(|d| d.get_str("status").unwrap() == "INVALID")
        .take(2)
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    for id in &invalid {
        coll.update_one(doc! { "_id": id }, doc! { "$set": { "err_msg": "stale" } })
            .await
            .unwrap();
    }
    stale.extend(invalid);
    // Sent (with other content) or in error: the rerun keeps these as they are.
    let kept: Vec<String> = ready
        .iter()
        .skip(5)
        .step_by(53)
        .filter(|id| !stale.contains(id))
        .cloned()
        .collect();
    for (n, id) in kept.iter().enumerate() {
        let status = if n % 2 == 0 { "SENT" } else { "ERROR" };
        coll.update_one(
            doc! { "_id": id },
            doc! { "$set": { "status": status, "statement.result.duration": 2 } },
        )
        .await
        .unwrap();
    }
    assert!(stale.len() > 5 && kept.len() > 2);
    let tampered = batch_docs(&env).await;

    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    let details = env.details(run).await;
    assert_eq!(details["inserted"], 0, "{details}");
    assert_eq!(details["updated"], stale.len(), "{details}");
    assert_eq!(details["kept_sent_or_error"], kept.len(), "{details}");
    assert_eq!(
        details["unchanged"],
        first.len() - stale.len() - kept.len(),
        "{details}"
    );
    assert_eq!(counts(env.pg(), run).await.1, stale.len() as i64);

    let after = batch_docs(&env).await;
    assert_eq!(after.len(), first.len());
    for ((before, tampered), now) in first.iter().zip(&tampered).zip(&after) {
        let id = now.get_str("_id").unwrap().to_string();
        assert_eq!(before.get_str("_id").unwrap(), id);
        if stale.contains(&id) {
            // Back to what the aggregation gives, with a new updated_at.
            for (k, v) in before {
                if k != "updated_at" {
                    assert_eq!(now.get(k), Some(v), "{id}: {k}");
                }
            }
            assert_ne!(now.get("updated_at"), before.get("updated_at"));
        } else {
            // Untouched: not even updated_at moved.
            assert_eq!(now, tampered, "{id}");
        }
    }
}

/// Documents of `keris_batch_data` without their write times: what a run
/// decides, whenever it wrote it.
async fn decided(env: &TestEnv) -> Vec<Document> {
    let mut docs = batch_docs(env).await;
    for d in &mut docs {
        d.remove("created_at");
        d.remove("updated_at");
    }
    docs
}

#[tokio::test]
async fn lrs_killed_with_writes_in_flight_then_rerun_leaves_what_one_uninterrupted_run_leaves() {
    // The same night in two databases: one run there, a killed run and its
    // rerun here.
    let reference = TestEnv::new().await;
    let env = TestEnv::new().await;
    for e in [&reference, &env] {
        seed::seed(&e.app, &SeedArgs::new(300, 30_000, Some(date(DAY)), 5))
            .await
            .unwrap();
    }
    reference.run_ok(ID, Some(date(DAY)), false).await;
    let expected = decided(&reference).await;

    // Small batches, four in flight: the kill falls among half-written ones.
    let mut child = env
        .command(&["lrs-01-001", "--date", DAY])
        .env("AIDT__JOBS__LRS_AGGREGATE__BATCH_SIZE", "20")
        .env("AIDT__JOBS__LRS_AGGREGATE__WRITES_IN_FLIGHT", "4")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let started = std::time::Instant::now();
    while coll.count_documents(doc! {}).await.unwrap() < 500 {
        assert!(started.elapsed().as_secs() < 120, "no writes seen");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    crate::helpers::signal(child.id(), "KILL");
    child.wait().unwrap();
    // Inserts the killed process had already sent still finish on the
    // server: count what was left once nothing more arrives.
    let mut left = coll.count_documents(doc! {}).await.unwrap();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = coll.count_documents(doc! {}).await.unwrap();
        if now == left {
            break;
        }
        left = now;
    }
    assert!(
        left < expected.len() as u64,
        "killed before the end: {left} of {}",
        expected.len()
    );

    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    assert_eq!(decided(&env).await, expected);
    let details = env.details(run).await;
    assert_eq!(
        details["inserted"].as_u64().unwrap() + details["unchanged"].as_u64().unwrap(),
        expected.len() as u64,
        "{details}"
    );
    assert_eq!(details["unchanged"].as_u64().unwrap(), left, "{details}");
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM batch_job_run WHERE job_id = 'LRS-01-001' ORDER BY run_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(
        statuses,
        ["FAILED", "COMPLETED"],
        "the killed run found stale"
    );
}
