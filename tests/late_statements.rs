//! LRS-01-001 on a messy LRS: statements stored days after their day,
//! voiding statements, documents no job can read, students whose records
//! are withheld. Expected figures are counted from the source documents.

use std::collections::BTreeMap;

use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::xapi;
use futures::TryStreamExt;
use keris_simulator::{self as simulator, SimulatorConfig};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use serde_json::Value;

use crate::helpers::{date, keris_env, seed_keris_day, TestEnv};

const ID: &str = "LRS-01-001";
const SEND: &str = "DC-01-001";
const DAY: &str = "2026-03-05";
const NEXT: &str = "2026-03-06";
const PARTNER: &str = "22222222-2222-4222-8222-222222222222";
const ITEM: &str = "https://aidt.example.kr/content/c1/item/i1";
const SUBMITTED: &str = "http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/submitted";

/// Seoul "YYYY-MM-DD HH:MM" as a BSON date.
fn at(day: &str, hm: &str) -> Bson {
    let t = chrono::DateTime::parse_from_rfc3339(&format!("{day}T{hm}:00.000+09:00")).unwrap();
    Bson::DateTime(mongodb::bson::DateTime::from_millis(t.timestamp_millis()))
}

/// A statement of `user` on `day` at `hm`, stored at `stored` (Seoul).
fn statement(user: &str, object: &str, day: &str, hm: &str, stored: (&str, &str)) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "statement": {
            "id": uuid::Uuid::new_v4().to_string(),
            "actor": { "objectType": "Agent", "account": { "homePage": "https://aidt.example.kr", "name": user } },
            "verb": { "id": SUBMITTED, "display": { "en-US": "submitted" } },
            "object": { "id": object, "objectType": "Activity" },
            "result": { "duration": "PT10S", "score": { "raw": 50 } },
            "context": { "platform": "aidt-demo", "extensions": { aidt_dev::seed::stored_key(xapi::EXT_PARTNER_ID): PARTNER } },
            "timestamp": format!("{day}T{hm}:00.000+09:00"),
        },
        "user_id": user,
        "partner_id": PARTNER,
        "timestamp": at(day, hm),
        "stored": at(stored.0, stored.1),
        "voided": false,
    }
}

/// A voiding statement of `user` for the statement with xAPI id `target`.
fn voiding(user: &str, target: &str, day: &str, hm: &str) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "statement": {
            "id": uuid::Uuid::new_v4().to_string(),
            "actor": { "objectType": "Agent", "account": { "homePage": "https://aidt.example.kr", "name": user } },
            "verb": { "id": xapi::VERB_VOIDED, "display": { "en-US": "voided" } },
            "object": { "objectType": "StatementRef", "id": target },
            "timestamp": format!("{day}T{hm}:00.000+09:00"),
        },
        "user_id": user,
        "partner_id": PARTNER,
        "timestamp": at(day, hm),
        "stored": at(day, hm),
        "voided": false,
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

async fn batch_docs(env: &TestEnv, filter: Document) -> Vec<Document> {
    env.app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .find(filter)
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

fn attempts(env: &TestEnv, statement: &Value) -> u64 {
    statement["result"]["extensions"][&env.app.settings.jobs.lrs_aggregate.attempts_extension]
        .as_u64()
        .unwrap()
}

type GroupKey = (String, String, String, String);

/// The students whose records are withheld from KERIS (no consent, grace
/// period of 30 days passed): the privacy rule's one definition of the set.
async fn withheld(env: &TestEnv) -> Vec<String> {
    let rule = aidt_batch::jobs::shared::privacy::ConsentRule {
        reference_time: chrono::Utc::now(),
        grace_days: 30,
    };
    aidt_batch::jobs::shared::privacy::withheld_students(env.pg(), &rule)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.to_string())
        .collect()
}

/// Non-voided, non-voiding source statements per (day, user, verb, object)
/// of students not withheld, counted from the documents (voiding
/// statements' targets left out).
async fn lrs_counts(env: &TestEnv) -> BTreeMap<GroupKey, u64> {
    let withheld = withheld(env).await;
    let all: Vec<Document> = env
        .app
        .mongo
        .collection::<Document>("statements")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let voided_by_ref: Vec<String> = all
        .iter()
        .filter_map(|d| {
            let s = d.get_document("statement").ok()?;
            (s.get_document("verb").ok()?.get_str("id").ok()? == xapi::VERB_VOIDED)
                .then(|| {
                    s.get_document("object")
                        .ok()?
                        .get_str("id")
                        .ok()
                        .map(String::from)
                })
                .flatten()
        })
        .collect();
    let mut counts = BTreeMap::new();
    for d in &all {
        let s = d.get_document("statement").unwrap();
        let verb = s.get_document("verb").unwrap().get_str("id").unwrap();
        let id = s.get_str("id").unwrap_or_default();
        if d.get_bool("voided").unwrap_or(false)
            || verb == xapi::VERB_VOIDED
            || voided_by_ref.iter().any(|v| v == id)
        {
            continue;
        }
        let object = s
            .get_document("object")
            .ok()
            .and_then(|o| o.get_str("id").ok())
            .unwrap_or_default();
        let ts = d.get_datetime("timestamp").unwrap().timestamp_millis();
        let day = chrono::DateTime::from_timestamp_millis(ts)
            .unwrap()
            .with_timezone(&aidt_batch::time::seoul())
            .date_naive()
            .to_string();
        let user = d.get_str("user_id").unwrap().to_string();
        if withheld.contains(&user) {
            continue;
        }
        *counts
            .entry((day, user, verb.to_string(), object.to_string()))
            .or_default() += 1;
    }
    counts
}

/// Attempts summed over each group's documents in keris_batch_data.
async fn doc_attempts(env: &TestEnv) -> BTreeMap<GroupKey, u64> {
    let mut sums = BTreeMap::new();
    for d in batch_docs(env, doc! {}).await {
        let s = wire(&d);
        let key = (
            d.get_str("base_dt").unwrap().to_string(),
            d.get_str("user_id").unwrap().to_string(),
            s["verb"]["id"].as_str().unwrap_or_default().to_string(),
            s["object"]["id"].as_str().unwrap_or_default().to_string(),
        );
        *sums.entry(key).or_default() += attempts(env, &s);
    }
    sums
}

/// Asserts that every group's documents carry exactly the LRS's count of
/// its statements (names the first groups that differ).
async fn assert_attempts_match_lrs(env: &TestEnv) {
    let (docs, lrs) = (doc_attempts(env).await, lrs_counts(env).await);
    let differ: Vec<_> = lrs
        .keys()
        .chain(docs.keys())
        .filter(|k| docs.get(*k) != lrs.get(*k))
        .take(5)
        .map(|k| (k, docs.get(k), lrs.get(k)))
        .collect();
    assert!(differ.is_empty(), "(group, documents, LRS): {differ:?}");
    assert!(!lrs.is_empty());
}

#[tokio::test]
async fn late_statements_of_a_sent_day_reach_keris_exactly_once_the_next_night() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |_| {}).await;
    seed_keris_day(&env, DAY, 150, 6_000, 11).await;
    // D's night: everything the LRS stored during D.
    env.run_ok(ID, Some(date(DAY)), false).await;
    env.run_ok(SEND, Some(date(DAY)), false).await;
    let sent_first = sim.stats().statements_accepted();
    assert!(sent_first > 100, "{sent_first}");

    // 500 statements of D the tablets sync at D+1 04:00: copies of D's
    // valid statements (new ids), so every one lands in a sent group.
    let coll = env.app.mongo.collection::<Document>("statements");
    let sent_groups: Vec<(String, String, String)> = batch_docs(&env, doc! { "status": "SENT" })
        .await
        .iter()
        .map(|d| {
            let s = wire(d);
            (
                d.get_str("user_id").unwrap().to_string(),
                s["verb"]["id"].as_str().unwrap().to_string(),
                s["object"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut late = Vec::new();
    let mut cursor = coll
        .find(doc! { "voided": false, "stored": { "$lt": at(NEXT, "00:00") } })
        .await
        .unwrap();
    while let Some(mut d) = cursor.try_next().await.unwrap() {
        if late.len() == 500 {
            break;
        }
        let s = d.get_document("statement").unwrap();
        let key = (
            d.get_str("user_id").unwrap().to_string(),
            s.get_document("verb")
                .unwrap()
                .get_str("id")
                .unwrap()
                .to_string(),
            s.get_document("object")
                .ok()
                .and_then(|o| o.get_str("id").ok())
                .unwrap_or_default()
                .to_string(),
        );
        if !sent_groups.contains(&key) {
            continue;
        }
        d.insert("_id", ObjectId::new());
        d.get_document_mut("statement")
            .unwrap()
            .insert("id", uuid::Uuid::new_v4().to_string());
        d.insert("stored", at(NEXT, "04:00"));
        late.push(d);
    }
    assert_eq!(late.len(), 500);
    insert(&env, late).await;

    // D+1's night. The late documents are D's (base_dt D): the sender's
    // look-back sends them; here D is sent explicitly as well.
    // Late: the 500, and what the seed itself stored after D (counted
    // from the documents: stored during D+1, of D, not voided, not withheld).
    let withheld = withheld(&env).await;
    let mut expected_late = 0;
    let mut cursor = coll
        .find(doc! { "voided": false, "stored": { "$gt": at(NEXT, "00:00"), "$lte": at("2026-03-07", "00:00") } })
        .await
        .unwrap();
    while let Some(d) = cursor.try_next().await.unwrap() {
        expected_late += u64::from(!withheld.contains(&d.get_str("user_id").unwrap().to_string()));
    }
    assert!(expected_late >= 500);
    let run = env.run_ok(ID, Some(date(NEXT)), false).await;
    let details = env.details(run).await;
    assert_eq!(details["late"]["statements"], expected_late, "{details}");
    assert_eq!(details["late"]["per_day"][DAY], expected_late, "{details}");
    let late_docs = batch_docs(
        &env,
        doc! { "base_dt": DAY, "stored_after": { "$exists": true } },
    )
    .await;
    assert!(!late_docs.is_empty());
    assert!(late_docs
        .iter()
        .all(|d| d.get_str("status").unwrap() == "READY"));
    env.run_ok(SEND, Some(date(NEXT)), false).await;
    env.run_ok(SEND, Some(date(DAY)), false).await;

    // Every group: attempts over its documents = the LRS's count.
    assert_attempts_match_lrs(&env).await;
    // What KERIS holds for D: the same attempts, once per document.
    let mut keris_attempts = 0;
    for d in batch_docs(&env, doc! { "base_dt": DAY, "status": "SENT" }).await {
        let id = uuid::Uuid::parse_str(d.get_str("_id").unwrap()).unwrap();
        let held = sim.statement(id).expect("KERIS holds every SENT statement");
        assert_eq!(held.statement, wire(&d), "content as sent");
        keris_attempts += attempts(&env, &held.statement);
    }
    let expected: u64 = lrs_counts(&env)
        .await
        .iter()
        .filter(|((day, ..), _)| day == DAY)
        .map(|(_, n)| n)
        .sum::<u64>()
        - batch_docs(&env, doc! { "base_dt": DAY, "status": "INVALID" })
            .await
            .iter()
            .map(|d| attempts(&env, &wire(d)))
            .sum::<u64>();
    assert_eq!(keris_attempts, expected);
    let late_sum: u64 = late_docs.iter().map(|d| attempts(&env, &wire(d))).sum();
    assert!(
        late_sum >= 500,
        "the late documents carry the late statements: {late_sum}"
    );

    // A rerun of the night sends nothing new.
    let accepted = sim.stats().statements_accepted();
    let rerun = env.run_ok(ID, Some(date(NEXT)), false).await;
    assert_eq!(env.details(rerun).await["late"]["statements"], 0);
    env.run_ok(SEND, Some(date(NEXT)), false).await;
    env.run_ok(SEND, Some(date(DAY)), false).await;
    assert_eq!(sim.stats().statements_accepted(), accepted);
}

#[tokio::test]
async fn a_late_statement_joins_its_groups_statement_while_it_is_unsent() {
    let env = TestEnv::new().await;
    let user = "11111111-1111-4111-8111-111111111111";
    insert(
        &env,
        vec![statement(user, ITEM, DAY, "10:00", (DAY, "10:00"))],
    )
    .await;
    env.run_ok(ID, Some(date(DAY)), false).await;
    let first = batch_docs(&env, doc! {}).await;
    assert_eq!(first.len(), 1);
    insert(
        &env,
        vec![statement(user, ITEM, DAY, "11:00", (NEXT, "04:00"))],
    )
    .await;
    env.run_ok(ID, Some(date(NEXT)), false).await;
    let after = batch_docs(&env, doc! {}).await;
    assert_eq!(
        after.len(),
        1,
        "still one statement for the group: {after:?}"
    );
    assert_eq!(after[0].get_str("_id"), first[0].get_str("_id"));
    assert_eq!(attempts(&env, &wire(&after[0])), 2);
    assert_eq!(wire(&after[0])["result"]["duration"], 20);
}

#[tokio::test]
async fn a_rerun_of_the_same_window_rebuilds_the_same_late_statement_and_keeps_a_sent_one() {
    let env = TestEnv::new().await;
    let user = "11111111-1111-4111-8111-111111111111";
    insert(
        &env,
        vec![statement(user, ITEM, DAY, "10:00", (DAY, "10:00"))],
    )
    .await;
    env.run_ok(ID, Some(date(DAY)), false).await;
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    coll.update_many(doc! {}, doc! { "$set": { "status": "SENT" } })
        .await
        .unwrap();
    insert(
        &env,
        vec![
            statement(user, ITEM, DAY, "11:00", (NEXT, "04:00")),
            statement(user, ITEM, DAY, "12:00", (NEXT, "05:00")),
        ],
    )
    .await;
    env.run_ok(ID, Some(date(NEXT)), false).await;
    let late = batch_docs(&env, doc! { "stored_after": { "$exists": true } }).await;
    assert_eq!(late.len(), 1);
    assert_eq!(attempts(&env, &wire(&late[0])), 2);
    // A crash before the watermark moved: the rerun covers the same window.
    sqlx::query("UPDATE batch_lrs_watermark SET stored_until = '2026-03-06 00:00:00+09'")
        .execute(env.pg())
        .await
        .unwrap();
    let rerun = env.run_ok(ID, Some(date(NEXT)), false).await;
    let again = batch_docs(&env, doc! { "stored_after": { "$exists": true } }).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].get("statement"), late[0].get("statement"));
    assert_eq!(env.details(rerun).await["inserted"], 0);
    // Sent meanwhile, then the same window once more: nothing new.
    coll.update_many(doc! {}, doc! { "$set": { "status": "SENT" } })
        .await
        .unwrap();
    sqlx::query("UPDATE batch_lrs_watermark SET stored_until = '2026-03-06 00:00:00+09'")
        .execute(env.pg())
        .await
        .unwrap();
    env.run_ok(ID, Some(date(NEXT)), false).await;
    assert_eq!(batch_docs(&env, doc! {}).await.len(), 2);
    assert_attempts_match_lrs(&env).await;
}

#[tokio::test]
async fn late_statements_older_than_the_lookback_are_counted_and_not_aggregated() {
    let env = TestEnv::new().await;
    let user = "11111111-1111-4111-8111-111111111111";
    env.run_ok(ID, Some(date(DAY)), false).await;
    insert(
        &env,
        vec![
            statement(user, ITEM, "2026-02-20", "10:00", (NEXT, "03:00")),
            statement(user, ITEM, "2026-02-20", "11:00", (NEXT, "03:00")),
            statement(user, ITEM, "2026-02-27", "10:00", (NEXT, "03:00")),
        ],
    )
    .await;
    let run = env.run_ok(ID, Some(date(NEXT)), false).await;
    let details = env.details(run).await;
    assert_eq!(details["too_late"]["statements"], 2, "{details}");
    assert_eq!(details["too_late"]["per_day"]["2026-02-20"], 2, "{details}");
    assert_eq!(details["late"]["statements"], 1, "{details}");
    let docs = batch_docs(&env, doc! {}).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].get_str("base_dt").unwrap(), "2026-02-27");
}

#[tokio::test]
async fn voiding_statements_are_not_aggregated_and_voided_statements_stop_counting_until_sent() {
    let env = TestEnv::new().await;
    let user = "11111111-1111-4111-8111-111111111111";
    let a = statement(user, ITEM, DAY, "10:00", (DAY, "10:00"));
    let b = statement(user, ITEM, DAY, "10:30", (DAY, "10:30"));
    let other = statement(
        user,
        "https://aidt.example.kr/content/c1/item/i2",
        DAY,
        "11:00",
        (DAY, "11:00"),
    );
    let id_of = |d: &Document| {
        d.get_document("statement")
            .unwrap()
            .get_str("id")
            .unwrap()
            .to_string()
    };
    let (a_id, other_id) = (id_of(&a), id_of(&other));
    insert(
        &env,
        vec![
            a,
            b,
            other.clone(),
            voiding(user, &"f".repeat(8), DAY, "12:00"),
        ],
    )
    .await;
    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    let details = env.details(run).await;
    assert_eq!(details["voiding_statements"], 1, "{details}");
    assert_eq!(
        details["invalid_reasons"],
        serde_json::json!({}),
        "{details}"
    );
    assert_eq!(
        batch_docs(&env, doc! {}).await.len(),
        2,
        "no document for the voiding statement"
    );
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let other_doc = batch_docs(&env, doc! { "statement.object.id": { "$regex": "i2$" } }).await;
    coll.update_one(
        doc! { "_id": other_doc[0].get_str("_id").unwrap() },
        doc! { "$set": { "status": "SENT" } },
    )
    .await
    .unwrap();

    // The next day the student voids `a` (still unsent) and `other` (sent).
    let statements = env.app.mongo.collection::<Document>("statements");
    statements
        .update_many(
            doc! { "statement.id": { "$in": [&a_id, &other_id] } },
            doc! { "$set": { "voided": true } },
        )
        .await
        .unwrap();
    insert(
        &env,
        vec![
            voiding(user, &a_id, NEXT, "09:00"),
            voiding(user, &other_id, NEXT, "09:05"),
        ],
    )
    .await;
    let run = env.run_ok(ID, Some(date(NEXT)), false).await;
    let details = env.details(run).await;
    let docs = batch_docs(&env, doc! { "statement.object.id": ITEM }).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(
        attempts(&env, &wire(&docs[0])),
        1,
        "the voided attempt no longer counts"
    );
    assert_eq!(details["voided_after_sent"]["statements"], 1, "{details}");
    assert_eq!(
        details["voided_after_sent"]["first"][0]["keris_statement_id"],
        other_doc[0].get_str("_id").unwrap(),
        "{details}"
    );
    let sent = batch_docs(&env, doc! { "status": "SENT" }).await;
    assert_eq!(
        sent[0].get("statement"),
        other_doc[0].get("statement"),
        "a sent statement is kept"
    );
    assert_eq!(
        details["invalid_reasons"],
        serde_json::json!({}),
        "{details}"
    );
    // A rerun counts nothing again.
    let rerun = env.run_ok(ID, Some(date(NEXT)), false).await;
    assert_eq!(
        env.details(rerun).await["voided_after_sent"]["statements"],
        0
    );
}

/// `doc` with `user_id` replaced by a string whose bytes are not UTF-8.
fn with_invalid_utf8_user(doc: &Document) -> mongodb::bson::RawDocumentBuf {
    let mut raw = mongodb::bson::RawDocumentBuf::from_document(doc).unwrap();
    let bytes = raw.as_bytes().to_vec();
    let needle = b"INVALIDUTF8";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut patched = bytes.clone();
    patched[at] = 0xff;
    patched[at + 1] = 0xfe;
    raw = mongodb::bson::RawDocumentBuf::from_bytes(patched).unwrap();
    raw
}

#[tokio::test]
async fn undecodable_documents_are_skipped_and_named_by_id_and_no_raw_id_is_told() {
    let env = TestEnv::new().await;
    let good = "11111111-1111-4111-8111-111111111111";
    let secret = "99999999-9999-4999-8999-999999999999";
    let mut docs = vec![
        statement(good, ITEM, DAY, "10:00", (DAY, "10:00")),
        statement(
            "00000000-0000-4000-8000-000000000001",
            ITEM,
            DAY,
            "10:00",
            (DAY, "10:00"),
        ),
    ];
    let mut binary = statement(secret, ITEM, DAY, "10:01", (DAY, "10:01"));
    binary.insert(
        "user_id",
        mongodb::bson::Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Uuid,
            bytes: uuid::Uuid::parse_str(secret).unwrap().as_bytes().to_vec(),
        },
    );
    let mut number = statement(secret, ITEM, DAY, "10:02", (DAY, "10:02"));
    number.insert("user_id", 4_242_424_242_i64);
    let mut no_actor = statement(secret, ITEM, DAY, "10:03", (DAY, "10:03"));
    no_actor
        .get_document_mut("statement")
        .unwrap()
        .remove("actor");
    let mut odd_time = statement(secret, ITEM, DAY, "10:04", (DAY, "10:04"));
    odd_time.insert("timestamp", "2026-03-05 10:04");
    let bad: Vec<&Document> = vec![&binary, &number, &no_actor, &odd_time];
    let mut expected_ids: Vec<String> = bad
        .iter()
        .map(|d| d.get_object_id("_id").unwrap().to_hex())
        .collect();
    docs.extend(bad.into_iter().cloned());
    insert(&env, docs).await;
    let mut utf8 = statement("INVALIDUTF8-user", ITEM, DAY, "10:05", (DAY, "10:05"));
    let utf8_id = ObjectId::new();
    utf8.insert("_id", utf8_id);
    let stored_utf8 = env
        .app
        .mongo
        .collection::<mongodb::bson::RawDocumentBuf>("statements")
        .insert_one(with_invalid_utf8_user(&utf8))
        .await
        .is_ok();
    if stored_utf8 {
        expected_ids.push(utf8_id.to_hex());
    }

    let out = env.run_cli(&["lrs-01-001", "--date", DAY]);
    let log = format!(
        "{}{}",
        crate::helpers::stdout(&out),
        crate::helpers::stderr(&out)
    );
    assert!(out.status.success(), "{log}");
    let (run, error_msg, details): (i64, Option<String>, Value) = sqlx::query_as(
        "SELECT run_id, error_msg, details FROM batch_job_run WHERE job_id = 'LRS-01-001' ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    let _ = run;
    assert_eq!(
        details["undecodable"]["documents"],
        expected_ids.len(),
        "{details}"
    );
    let mut named: Vec<String> = details["undecodable"]["first_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    named.sort();
    expected_ids.sort();
    assert_eq!(named, expected_ids);
    // Both good students are aggregated.
    assert_eq!(batch_docs(&env, doc! {}).await.len(), 2);
    let told = format!("{log}{}{details}", error_msg.unwrap_or_default());
    for raw in [secret, "4242424242", good, "INVALIDUTF8"] {
        assert!(!told.contains(raw), "raw id {raw} told: {told}");
    }
    assert!(
        told.contains(&expected_ids[0]),
        "the _id is named in the log: {log}"
    );
}

#[tokio::test]
async fn students_without_consent_past_their_grace_period_are_left_out_at_aggregation() {
    let env = TestEnv::new().await;
    let now = chrono::Utc::now();
    let mut sql = String::from("INSERT INTO tb_lms_school VALUES ('SCH1', 'Test school', 'M');\n");
    let mut docs = Vec::new();
    let mut withheld = Vec::new();
    let mut kept = Vec::new();
    for i in 0..202u128 {
        let u = uuid::Uuid::from_u128(0x5000_0000_0000_4000_8000_0000_0000_0000 + i).to_string();
        // 10 without consent registered 40 days ago; one within its grace
        // period (10 days); one with consent; the rest with consent too.
        let (reg_days, consent) = match i {
            0..=9 => (40, None),
            10 => (10, None),
            _ => (40, Some("Y")),
        };
        let reg = (now - chrono::Duration::days(reg_days)).to_rfc3339();
        sql += &format!(
            "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, grade, class_no, user_nm, email, reg_dt)
               VALUES ('{u}', '{PARTNER}', 'S', 'SCH1', 2, 3, 'Name', 'e@example.com', '{reg}');\n"
        );
        if let Some(agree) = consent {
            sql += &format!("INSERT INTO tb_lms_user_consent VALUES ('{u}', 'PRVC_PROVIDE', '{agree}', '{reg}', NULL);\n");
        }
        if i < 10 {
            withheld.push(u.clone())
        } else {
            kept.push(u.clone())
        }
        for item in 0..2 {
            let object = format!("{ITEM}{item}");
            docs.push(statement(&u, &object, DAY, "10:00", (DAY, "10:00")));
            docs.push(statement(&u, &object, DAY, "10:00", (NEXT, "04:00")));
        }
    }
    sqlx::raw_sql(&sql).execute(env.pg()).await.unwrap();
    insert(&env, docs).await;
    let run = env.run_ok(ID, Some(date(DAY)), false).await;
    let run2 = env.run_ok(ID, Some(date(NEXT)), false).await;
    for u in &withheld {
        assert!(
            batch_docs(&env, doc! { "user_id": u }).await.is_empty(),
            "{u} withheld"
        );
    }
    for u in &kept {
        let docs = batch_docs(&env, doc! { "user_id": u }).await;
        assert_eq!(docs.len(), 2, "{u}");
        let sum: u64 = docs.iter().map(|d| attempts(&env, &wire(d))).sum();
        assert_eq!(sum, 4, "{u}: the late statements joined");
    }
    let d1 = env.details(run).await;
    assert_eq!(d1["withheld_statements"], 20, "{d1}");
    let d2 = env.details(run2).await;
    assert_eq!(d2["withheld_statements"], 20, "{d2}");
    for u in &withheld {
        assert!(!d1.to_string().contains(u) && !d2.to_string().contains(u));
    }
}

/// LRS-01-001 for `day` as partition `index` of 2.
async fn run_partition(env: &TestEnv, day: &str, index: u32) {
    use aidt_batch::runtime::runner::{self, RunRequest};
    let def = aidt_batch::jobs::REGISTRY.find(ID).unwrap();
    let request = RunRequest {
        date: Some(date(day)),
        partition: aidt_batch::runtime::partition::Partition::new(index, 2),
        params: serde_json::json!({"test": true}),
        ..RunRequest::new(&aidt_batch::jobs::REGISTRY, def)
    };
    let outcome = runner::run(env.app.clone(), request).await.unwrap();
    assert_eq!(outcome.exit, aidt_batch::runtime::Exit::Success);
}

#[tokio::test]
async fn seeded_days_with_late_statements_keep_attempts_equal_to_the_lrs_counts_per_partition() {
    let env = TestEnv::new().await;
    // The seed stores 2% of statements 1-6 hours late: some after the night.
    seed_keris_day(&env, DAY, 60, 3_000, 5).await;
    for p in 0..2 {
        run_partition(&env, DAY, p).await;
    }
    let after_night: u64 = doc_attempts(&env).await.values().sum();
    let total: u64 = lrs_counts(&env).await.values().sum();
    assert!(
        after_night < total,
        "some statements were stored after D: {after_night} of {total}"
    );
    for p in 0..2 {
        run_partition(&env, NEXT, p).await;
    }
    assert_attempts_match_lrs(&env).await;
    let parts: Vec<String> =
        sqlx::query_scalar("SELECT part FROM batch_lrs_watermark ORDER BY part")
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert_eq!(parts, ["0/2", "1/2"]);
}
