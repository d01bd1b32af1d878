//! `aidt-batch dev seed`: every contract table and `statements` filled with
//! consistent data, the same data for the same seed, and no second world on
//! top of the first without `--reset`.

use std::collections::{BTreeSet, HashMap};

use aidt_batch::config::PartnerSettings;
use aidt_dev::seed::{self, SeedArgs, CONTRACT_TABLES};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use secrecy::SecretString;
use sqlx::PgPool;

use crate::helpers::*;

const DATE: &str = "2026-03-05";
/// The partner of `config/local.toml`.
const DEMO_PARTNER: &str = "0b6a4a8e-3f4c-4d0e-9a51-2d1f6f1c0001";
const SECOND_PARTNER: &str = "5d7c2f7e-0a4b-4c55-8d2e-6f1a9b3c0002";
const STD_SYS_PATTERN: &str =
    r"^[EMH]\d(KOR|SOC|ENG|SCI|PRA|MAT|INF)A\d{2}(B\d{2})?(C\d{2})?(D\d{2})?$";

fn args(students: u32, statements: u32, seed: u64) -> SeedArgs {
    SeedArgs::new(students, statements, Some(date(DATE)), seed)
}

async fn count(pg: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pg)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn statements(env: &TestEnv) -> Vec<Document> {
    let coll = env.app.mongo.collection::<Document>("statements");
    let mut docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.sort_by_key(|d| d.get_object_id("_id").unwrap());
    docs
}

#[tokio::test]
async fn seed_fills_every_contract_table_consistently() {
    let mut env = TestEnv::new().await;
    env.configure(|s| {
        s.keris.partners.insert(
            "second".into(),
            PartnerSettings {
                partner_id: Some(SecretString::from(SECOND_PARTNER)),
            },
        );
    });

    let report = seed::seed(&env.app, &args(200, 3_000, 7))
        .await
        .expect("seed succeeds");
    let pg = env.pg();

    // Every tb_ table of the contract migration is listed, and holds rows.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = current_schema() AND table_name LIKE 'tb\\_%' ORDER BY 1",
    )
    .fetch_all(pg)
    .await
    .unwrap();
    let listed: BTreeSet<&str> = CONTRACT_TABLES.into_iter().collect();
    assert_eq!(
        tables.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        listed
    );
    for table in &tables {
        let n = count(pg, &format!("SELECT count(*) FROM {table}")).await;
        assert!(n > 0, "{table} is empty");
        assert_eq!(
            report.count(table),
            Some(n as u64),
            "report line of {table}"
        );
    }

    // Users: every level, every subject; students, teachers and parents, all
    // of a configured partner.
    assert_eq!(
        count(pg, "SELECT count(DISTINCT school_level) FROM tb_lms_school").await,
        3
    );
    assert_eq!(
        count(pg, "SELECT count(DISTINCT subject_cd) FROM tb_lms_course").await,
        7
    );
    assert_eq!(
        count(pg, "SELECT count(*) FROM tb_lms_user WHERE user_type = 'S'").await,
        200
    );
    assert!(count(pg, "SELECT count(*) FROM tb_lms_user WHERE user_type = 'T'").await > 0);
    assert!(count(pg, "SELECT count(*) FROM tb_lms_user WHERE user_type = 'P'").await > 0);
    let partners: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT partner_id::text FROM tb_lms_user ORDER BY 1")
            .fetch_all(pg)
            .await
            .unwrap();
    assert_eq!(
        partners,
        vec![DEMO_PARTNER.to_string(), SECOND_PARTNER.to_string()]
    );
    assert_eq!(
        count(
            pg,
            "SELECT count(*) FROM tb_lms_user WHERE user_type = 'S'
                AND (reg_dt < '2026-03-05 00:00+09'::timestamptz - interval '90 days' OR reg_dt >= '2026-03-05 00:00+09')"
        )
        .await,
        0,
        "students registered within the 90 days before the business date"
    );

    // Consent mix: agreed, refused, withdrawn, and no row at all.
    let consent = |yn: &str, withdrawn: bool| {
        format!(
            "SELECT count(*) FROM tb_lms_user_consent c JOIN tb_lms_user u USING (user_id)
              WHERE u.user_type = 'S' AND c.consent_type = 'PRVC_PROVIDE' AND c.agree_yn = '{yn}'
                AND (c.withdraw_dt IS NOT NULL) = {withdrawn}"
        )
    };
    assert!(
        count(pg, &consent("Y", false)).await > 0,
        "students who agreed"
    );
    assert!(
        count(pg, &consent("N", false)).await > 0,
        "students who refused"
    );
    assert!(
        count(pg, &consent("N", true)).await > 0,
        "students who withdrew"
    );
    assert!(
        count(
            pg,
            "SELECT count(*) FROM tb_lms_user u WHERE u.user_type = 'S'
                AND NOT EXISTS (SELECT 1 FROM tb_lms_user_consent c WHERE c.user_id = u.user_id)"
        )
        .await
            > 0,
        "students without a consent row"
    );

    // Tokens for most students, not all.
    let tokens = count(pg, "SELECT count(*) FROM tb_lms_keris_token").await;
    assert!(
        (180..200).contains(&tokens),
        "{tokens} tokens for 200 students"
    );

    // Curriculum ids follow the KERIS pattern and everything refers to them.
    assert_eq!(
        count(
            pg,
            &format!("SELECT count(*) FROM tb_lms_std_sys WHERE std_sys_id !~ '{STD_SYS_PATTERN}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            pg,
            r"SELECT count(*) FROM tb_lms_std_sys WHERE achv_std_cd !~ '^\[\d+.\d{2}-\d{2}\]$'"
        )
        .await,
        0
    );
    for (table, column) in [
        ("tb_lms_lrn_result", "std_sys_id"),
        ("tb_lms_lrn_progress", "std_sys_id"),
        ("tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys", "std_sys_id"),
        ("tb_lms_course_std_sys", "std_sys_id"),
        ("tb_lms_kc_std_map", "std_sys_id"),
        (
            "(SELECT unnest(std_sys_ids) AS s FROM tb_lcms_item WHERE item_id !~ '-ERR-0[1-4]$')",
            "s",
        ),
    ] {
        let sql = format!("SELECT count(*) FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM tb_lms_std_sys s WHERE s.std_sys_id = t.{column})");
        assert_eq!(count(pg, &sql).await, 0, "unknown std_sys_id in {table}");
    }
    // ... but for the planted LCMS data errors (seed/content.rs), in the LCMS
    // and in the LMS copy alike: one unknown code, empty kc_ids, a NULL
    // standard-system id, a NULL KC id; nowhere else.
    for table in ["tb_lcms_item", "tb_lms_item"] {
        let errors: Vec<(String, Option<String>, bool, bool)> = sqlx::query_as(&format!(
            "SELECT item_id, u.code, cardinality(kc_ids) = 0, array_position(kc_ids, NULL) IS NOT NULL
               FROM {table} i
               LEFT JOIN LATERAL unnest(std_sys_ids) AS u(code)
                 ON NOT EXISTS (SELECT 1 FROM tb_lms_std_sys s WHERE s.std_sys_id = u.code)
              WHERE u.code IS NOT NULL OR array_position(std_sys_ids, NULL) IS NOT NULL
                 OR cardinality(kc_ids) = 0 OR array_position(kc_ids, NULL) IS NOT NULL
              ORDER BY item_id"
        ))
        .fetch_all(pg)
        .await
        .unwrap();
        let suffixes: Vec<&str> = errors.iter().map(|e| &e.0[e.0.len() - 6..]).collect();
        assert_eq!(
            suffixes,
            ["ERR-01", "ERR-02", "ERR-03", "ERR-04"],
            "{table}: {errors:?}"
        );
        let unknown = errors[0].1.as_deref().expect("ERR-01's unknown code");
        let shaped: bool = sqlx::query_scalar(&format!("SELECT $1 ~ '{STD_SYS_PATTERN}'"))
            .bind(unknown)
            .fetch_one(pg)
            .await
            .unwrap();
        assert!(shaped, "{unknown} has the KERIS shape");
        assert!(errors[1].2 && errors[3].3, "{table}: {errors:?}");
    }
    // The LMS copy is partial, and part of it is stale.
    assert!(
        count(pg, "SELECT count(*) FROM tb_lms_item").await
            < count(pg, "SELECT count(*) FROM tb_lcms_item").await
    );
    assert!(
        count(pg, "SELECT count(*) FROM tb_lms_item l JOIN tb_lcms_item c USING (item_id) WHERE l.mod_dt < c.mod_dt")
            .await
            > 0
    );

    // Every user id of the activity, log and DC tables is a known user.
    for table in [
        "tb_lms_user_consent",
        "tb_lms_keris_token",
        "tb_lms_lecture_member",
        "tb_lms_lrn_result",
        "tb_lms_lrn_session",
        "tb_lms_lrn_progress",
        "tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys",
        "tb_lms_assignment_submit",
        "tb_lms_ntcn_msg",
        "tb_lms_stdnt_cmpt_idx_daily",
        "tb_lms_stdnt_lrn_stats_daily",
        "tb_lms_access_log",
        "tb_lms_login_hist",
        "tb_dc_error_data_info",
    ] {
        let sql = format!(
            "SELECT count(*) FROM {table} t WHERE t.user_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM tb_lms_user u WHERE u.user_id = t.user_id)"
        );
        assert_eq!(count(pg, &sql).await, 0, "unknown user in {table}");
    }
    // Results: by lecture members, on the business date in Seoul, scores 0–100.
    assert_eq!(
        count(
            pg,
            "SELECT count(*) FROM tb_lms_lrn_result r
              WHERE NOT EXISTS (SELECT 1 FROM tb_lms_lecture_member m WHERE m.user_id = r.user_id AND m.lecture_code = r.lecture_code)
                 OR (r.solved_at AT TIME ZONE 'Asia/Seoul')::date <> '2026-03-05'
                 OR r.score NOT BETWEEN 0 AND 100"
        )
        .await,
        0
    );
    assert!(
        count(
            pg,
            "SELECT count(*) FROM tb_lms_lrn_session WHERE ended_at IS NULL"
        )
        .await
            > 0,
        "open sessions"
    );
    assert!(
        count(pg, "SELECT count(*) FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys WHERE achievement_level IS NULL")
            .await
            > 0,
        "dashboard rows without a level"
    );
    // Logs on both sides of the retention limits.
    assert!(
        count(
            pg,
            "SELECT count(*) FROM tb_lms_access_log WHERE accessed_at < '2026-03-05'::date - 90"
        )
        .await
            > 0
    );
    assert!(
        count(
            pg,
            "SELECT count(*) FROM tb_lms_access_log WHERE accessed_at > '2026-03-05'::date - 90"
        )
        .await
            > 0
    );
    assert!(
        count(
            pg,
            "SELECT count(*) FROM tb_lms_login_hist WHERE login_at < '2026-03-05'::date - 365"
        )
        .await
            > 0
    );
    // BO: every admin status, every maintenance state.
    assert_eq!(
        count(pg, "SELECT count(DISTINCT status) FROM tb_bo_admin_user").await,
        3
    );
    assert_eq!(
        count(pg, "SELECT count(DISTINCT status) FROM tb_bo_pm_schedule").await,
        4
    );

    // Statements: exactly as many as asked, in the contract's shape.
    let docs = statements(&env).await;
    assert_eq!(docs.len(), 3_000);
    let users: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT user_id::text, partner_id::text FROM tb_lms_user",
    )
    .fetch_all(pg)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let day_start = aidt_batch::time::start_of_day_seoul(date(DATE)).timestamp_millis();
    let day_end = day_start + 86_400_000;
    let partner_key = "http://aidtbook.kr/xapi/profiles/cmn/1.0/contexts/extensions/partner-id"
        .replace('.', "&46;");
    let (mut voided, mut answers, mut broken) = (0, 0, 0);
    let mut attempts: HashMap<(String, String, String), u32> = HashMap::new();
    for d in &docs {
        let user_id = d.get_str("user_id").unwrap();
        let partner_id = d.get_str("partner_id").unwrap();
        assert_eq!(
            users.get(user_id).map(String::as_str),
            Some(partner_id),
            "user and partner of {d}"
        );
        assert!([DEMO_PARTNER, SECOND_PARTNER].contains(&partner_id));
        let ts = d.get_datetime("timestamp").unwrap().timestamp_millis();
        assert!(
            (day_start..day_end).contains(&ts),
            "timestamp within the business date: {d}"
        );
        assert!(d.get_datetime("stored").unwrap().timestamp_millis() >= ts);
        voided += u32::from(d.get_bool("voided").unwrap());

        let st = d.get_document("statement").unwrap();
        uuid::Uuid::parse_str(st.get_str("id").unwrap()).expect("statement id is a uuid");
        assert_eq!(
            st.get_document("actor")
                .unwrap()
                .get_document("account")
                .unwrap()
                .get_str("name")
                .unwrap(),
            user_id
        );
        let verb = st.get_document("verb").unwrap().get_str("id").unwrap();
        assert!(
            verb.starts_with("http://aidtbook.kr/xapi/profiles/"),
            "{verb}"
        );
        let timestamp = st.get_str("timestamp").unwrap();
        let ext_partner = st
            .get_document("context")
            .unwrap()
            .get_document("extensions")
            .unwrap()
            .get_str(&partner_key)
            .unwrap();
        let Ok(object) = st.get_document("object") else {
            broken += 1;
            continue;
        };
        if verb.ends_with("/verbs/answered")
            || !timestamp.ends_with("+09:00")
            || ext_partner != partner_id
        {
            broken += 1;
            continue;
        }
        let parsed = chrono::DateTime::parse_from_rfc3339(timestamp).unwrap();
        assert_eq!(parsed.timestamp_millis(), ts);
        let object_id = object.get_str("id").unwrap();
        assert!(
            object_id.starts_with("https://aidt.example.kr/content/"),
            "{object_id}"
        );
        if verb == "http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/submitted" {
            answers += 1;
            let result = st.get_document("result").unwrap();
            let raw = result
                .get_document("score")
                .unwrap()
                .get_i32("raw")
                .unwrap();
            assert!((0..=100).contains(&raw));
            result.get_bool("success").unwrap();
            assert!(result.get_str("duration").unwrap().starts_with("PT"));
            let standards = result
                .get_document("extensions")
                .unwrap()
                .get_array(
                    "http://aidtbook.kr/xapi/profiles/assessment/1.0/results/extensions/curriculum-standard"
                        .replace('.', "&46;"),
                )
                .unwrap();
            let Bson::Document(standard) = &standards[0] else {
                panic!("curriculum standard entry")
            };
            assert!(
                ["A", "B", "C", "D", "E"].contains(&standard.get_str("achievement-level").unwrap())
            );
            let std_sys_id = standard.get_str("id").unwrap();
            assert_eq!(
                count(
                    pg,
                    &format!(
                        "SELECT count(*) FROM tb_lms_std_sys WHERE std_sys_id = '{std_sys_id}'"
                    )
                )
                .await,
                1
            );
        }
        *attempts
            .entry((user_id.to_string(), verb.to_string(), object_id.to_string()))
            .or_default() += 1;
    }
    assert!(answers > 1_000, "{answers} answers: mostly assessment");
    assert!((5..=100).contains(&voided), "{voided} voided");
    assert!(
        (1..=50).contains(&broken),
        "{broken} invalid for the profile"
    );
    assert!(
        attempts.values().any(|&n| n > 1),
        "repeated (student, verb, object)"
    );
}

/// A checksum of every row of every contract table, and all statements.
async fn fingerprint(env: &TestEnv) -> (Vec<String>, Vec<Document>) {
    let mut sums = Vec::new();
    for table in CONTRACT_TABLES {
        let sql = format!(
            "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        );
        let sum: String = sqlx::query_scalar(&sql).fetch_one(env.pg()).await.unwrap();
        sums.push(format!("{table} {sum}"));
    }
    (sums, statements(env).await)
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data_and_another_seed_other_data() {
    let (a, b, c) = tokio::join!(TestEnv::new(), TestEnv::new(), TestEnv::new());
    seed::seed(&a.app, &args(120, 1_500, 11)).await.unwrap();
    seed::seed(&b.app, &args(120, 1_500, 11)).await.unwrap();
    seed::seed(&c.app, &args(120, 1_500, 12)).await.unwrap();

    let (fa, fb, fc) = (
        fingerprint(&a).await,
        fingerprint(&b).await,
        fingerprint(&c).await,
    );
    assert_eq!(fa.0, fb.0, "same seed: same rows");
    assert!(fa.1 == fb.1, "same seed: same statements");

    let users =
        "SELECT md5(string_agg(user_id::text || user_nm, ',' ORDER BY user_id)) FROM tb_lms_user";
    let sum = |env: &TestEnv| {
        let pg = env.pg().clone();
        async move {
            sqlx::query_scalar::<_, String>(users)
                .fetch_one(&pg)
                .await
                .unwrap()
        }
    };
    assert_eq!(sum(&a).await, sum(&b).await);
    assert_ne!(sum(&a).await, sum(&c).await, "another seed: other users");
    let ids = |docs: &[Document]| {
        docs.iter()
            .map(|d| {
                d.get_document("statement")
                    .unwrap()
                    .get_str("id")
                    .unwrap()
                    .to_string()
            })
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(ids(&fa.1), ids(&fb.1));
    assert!(
        ids(&fa.1).is_disjoint(&ids(&fc.1)),
        "another seed: other statement ids"
    );
}

#[tokio::test]
async fn reseeding_is_refused_without_reset_and_starts_over_with_it() {
    let env = TestEnv::new().await;
    seed::seed(&env.app, &args(60, 400, 3)).await.unwrap();
    let first = fingerprint(&env).await;
    env.app
        .mongo
        .collection::<Document>("keris_batch_data")
        .insert_one(doc! { "_id": "x", "status": "READY" })
        .await
        .unwrap();

    let err = seed::seed(&env.app, &args(60, 400, 3))
        .await
        .expect_err("a second seed is refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("already hold data") && message.contains("--reset"),
        "{message}"
    );
    assert_eq!(
        count(
            env.pg(),
            "SELECT count(*) FROM tb_lms_user WHERE user_type = 'S'"
        )
        .await,
        60,
        "nothing added"
    );

    let mut reset = args(60, 400, 3);
    reset.reset = true;
    seed::seed(&env.app, &reset)
        .await
        .expect("seed --reset succeeds");
    assert_eq!(
        fingerprint(&env).await,
        first,
        "the same world again, ids restarted"
    );
    let batch_data = env
        .app
        .mongo
        .collection::<Document>("keris_batch_data")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(batch_data, 0, "keris_batch_data dropped");
    // ... and indexed again as `migrate` indexes it: DC-01-001 reads by them.
    let keys: Vec<Document> = env
        .app
        .mongo
        .collection::<Document>("keris_batch_data")
        .list_indexes()
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.keys)
        .collect();
    for wanted in [
        doc! { "base_dt": 1, "partner_id": 1, "status": 1, "user_hash": 1, "_id": 1 },
        doc! { "user_id": 1 },
    ] {
        assert!(keys.contains(&wanted), "{wanted} in {keys:?}");
    }
    assert_eq!(keys.len(), 3, "_id and the two above: {keys:?}");
}

#[tokio::test]
async fn the_cli_seeds_and_prints_what_it_wrote() {
    let env = TestEnv::new().await;
    let out = env.run_dev(&[
        "seed",
        "--students",
        "30",
        "--statements",
        "100",
        "--date",
        DATE,
        "--seed",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("tb_lms_user "))
        .expect("a line for tb_lms_user");
    let n: i64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert_eq!(n, count(env.pg(), "SELECT count(*) FROM tb_lms_user").await);
    assert!(
        text.lines()
            .any(|l| l.contains(".statements ") && l.trim_end().ends_with(" 100")),
        "{text}"
    );
}
