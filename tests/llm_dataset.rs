//! LMS-01-009 (LLM dataset) against real PostgreSQL, into a directory and
//! against the S3-compatible server `scripts/services` starts (moto, with
//! request authentication on). Each S3 test makes its own bucket.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::Output;

use futures::TryStreamExt as _;
use hmac::{Hmac, Mac};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::helpers::*;

async fn exec(pg: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pg).await.unwrap();
}

/// The key in config/local.toml.
const KEY: &str = "local-llm-dataset-pseudonym-key";

const S1: &str = "10000000-0000-4000-8000-000000000001";
const S2: &str = "10000000-0000-4000-8000-000000000002";
const REFUSED: &str = "10000000-0000-4000-8000-000000000003";
const NO_ROW: &str = "10000000-0000-4000-8000-000000000004";
const DELETED: &str = "10000000-0000-4000-8000-000000000005";

/// Names, emails and school ids that must never appear in the output.
const PERSONAL: &[&str] = &[
    S1,
    S2,
    REFUSED,
    NO_ROW,
    DELETED,
    "Kim Minsu",
    "Lee Jiwoo",
    "minsu@example.com",
    "jiwoo@example.com",
    "SCH-9001",
];

fn pseudonym(user_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Range 2026-06-30..2026-07-01 (KST).
async fn seed(pg: &PgPool) {
    exec(
        pg,
        &format!(
            "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, user_nm, email, del_yn) VALUES
               ('{S1}', gen_random_uuid(), 'S', 'SCH-9001', 'Kim Minsu', 'minsu@example.com', 'N'),
               ('{S2}', gen_random_uuid(), 'S', 'SCH-9001', 'Lee Jiwoo', 'jiwoo@example.com', 'N'),
               ('{REFUSED}', gen_random_uuid(), 'S', 'SCH-9001', 'Park Refused', 'refused@example.com', 'N'),
               ('{NO_ROW}', gen_random_uuid(), 'S', 'SCH-9001', 'Choi Norow', 'norow@example.com', 'N'),
               ('{DELETED}', gen_random_uuid(), 'S', 'SCH-9001', NULL, NULL, 'Y');
             INSERT INTO tb_lms_user_consent (user_id, consent_type, agree_yn, agree_dt) VALUES
               ('{S1}', 'PRVC_PROVIDE', 'Y', now()), ('{S2}', 'PRVC_PROVIDE', 'Y', now()),
               ('{REFUSED}', 'PRVC_PROVIDE', 'N', now()), ('{DELETED}', 'PRVC_PROVIDE', 'Y', now()),
               ('{NO_ROW}', 'MARKETING', 'Y', now());
             INSERT INTO tb_lms_std_sys (std_sys_id, achv_std_cd, subject_cd, school_level, std_sys_nm) VALUES
               ('E4MATA01B01C01', '[4수01-01]', 'MAT', 'E', 'n1'),
               ('E4MATA01B01C02', '[4수01-02]', 'MAT', 'E', 'n2');
             INSERT INTO tb_lms_item (item_id, content_id, item_type, difficulty, std_sys_ids, mod_dt) VALUES
               ('IT-1', 'CT-1', 'M', 3, '{{E4MATA01B01C01}}', now()),
               ('IT-2', 'CT-1', 'S', 5, '{{E4MATA01B01C02}}', now());
             INSERT INTO tb_lms_lrn_result (result_id, user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, duration_sec, solved_at) VALUES
               (1, '{S1}', 'L1', 'IT-1', 'CT-1', 'E4MATA01B01C01', 'Y', 100, 30, '2026-06-30 00:00+09'),
               (2, '{S2}', 'L1', 'IT-2', 'CT-1', 'E4MATA01B01C02', 'N', 37.5, 95, '2026-06-30 09:00+09'),
               (3, '{S1}', 'L1', 'IT-X', 'CT-9', 'E4MATA01B01C09', 'N', 0, 12, '2026-07-01 23:59:59+09'),
               (4, '{S1}', 'L1', 'IT-2', 'CT-1', 'E4MATA01B01C02', 'Y', 80, 40, '2026-06-30 09:00+09'),
               -- outside the range
               (5, '{S1}', 'L1', 'IT-1', 'CT-1', 'E4MATA01B01C01', 'Y', 90, 10, '2026-06-29 23:59:59+09'),
               (6, '{S1}', 'L1', 'IT-1', 'CT-1', 'E4MATA01B01C01', 'Y', 90, 10, '2026-07-02 00:00+09'),
               -- left out: refused, no consent row, deleted
               (7, '{REFUSED}', 'L1', 'IT-1', 'CT-1', 'E4MATA01B01C01', 'Y', 90, 10, '2026-06-30 10:00+09'),
               (8, '{NO_ROW}', 'L1', 'IT-1', 'CT-1', 'E4MATA01B01C01', 'Y', 90, 10, '2026-06-30 10:00+09'),
               (9, '{DELETED}', 'L1', 'IT-1', 'CT-1', 'E4MATA01B01C01', 'Y', 90, 10, '2026-06-30 10:00+09');"
        ),
    )
    .await;
}

/// In `solved_at, result_id` order.
fn expected_records() -> Vec<Value> {
    let (p1, p2) = (pseudonym(S1), pseudonym(S2));
    vec![
        json!({"student": p1, "item_id": "IT-1", "item_type": "M", "difficulty": 3, "std_sys_id": "E4MATA01B01C01",
               "achv_std_cd": "[4수01-01]", "correct": true, "score": 100.0, "duration_sec": 30, "date": "2026-06-30"}),
        json!({"student": p2, "item_id": "IT-2", "item_type": "S", "difficulty": 5, "std_sys_id": "E4MATA01B01C02",
               "achv_std_cd": "[4수01-02]", "correct": false, "score": 37.5, "duration_sec": 95, "date": "2026-06-30"}),
        json!({"student": p1, "item_id": "IT-2", "item_type": "S", "difficulty": 5, "std_sys_id": "E4MATA01B01C02",
               "achv_std_cd": "[4수01-02]", "correct": true, "score": 80.0, "duration_sec": 40, "date": "2026-06-30"}),
        // an item and a standard the LMS does not know (yet)
        json!({"student": p1, "item_id": "IT-X", "item_type": null, "difficulty": null, "std_sys_id": "E4MATA01B01C09",
               "achv_std_cd": null, "correct": false, "score": 0.0, "duration_sec": 12, "date": "2026-07-01"}),
    ]
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn records_of(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn assert_no_personal_data(what: &str, text: &str) {
    for needle in PERSONAL {
        assert!(!text.contains(needle), "{what} contains {needle}");
    }
}

const RANGE: &[&str] = &["--from", "2026-06-30", "--to", "2026-07-01"];

#[tokio::test]
async fn llm_dataset_in_a_directory_has_exactly_the_consenting_students_records_and_its_manifest() {
    let env = TestEnv::new().await;
    seed(env.pg()).await;
    let out_dir = tempfile::tempdir().unwrap();
    let dir_arg = out_dir.path().to_str().unwrap();
    let dir = out_dir.path().join("llm-dataset/2026-06-30_2026-07-01");

    let dry = env.run_cli(
        &[
            &["lms-01-009", "--dry-run", "--output-dir", dir_arg][..],
            RANGE,
        ]
        .concat(),
    );
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(!out_dir.path().join("llm-dataset").exists());

    let mut shas = Vec::new();
    for _ in 0..2 {
        let out = env.run_cli(&[&["lms-01-009", "--output-dir", dir_arg][..], RANGE].concat());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let object = std::fs::read(dir.join("responses.jsonl.gz")).unwrap();
        let manifest_text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        let manifest: Value = serde_json::from_str(&manifest_text).unwrap();
        let text = gunzip(&object);
        assert_eq!(records_of(&text), expected_records());
        assert_eq!(manifest["sha256"], sha256_hex(&object));
        assert_eq!(manifest["bytes"], object.len());
        assert_eq!(manifest["records"], 4);
        assert_eq!(manifest["students"], 2);
        assert_eq!(manifest["from"], "2026-06-30");
        assert_eq!(manifest["to"], "2026-07-01");
        assert_eq!(manifest["schema_version"], 1);
        assert!(manifest["created_at"].is_string());
        assert_no_personal_data("the records", &text);
        assert_no_personal_data("the object", &String::from_utf8_lossy(&object));
        assert_no_personal_data("the manifest", &manifest_text);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["manifest.json", "responses.jsonl.gz"]);
        shas.push(manifest["sha256"].clone());
    }
    // The same range and data: the rerun replaced the object with the same bytes.
    assert_eq!(shas[0], shas[1]);
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT read_cnt, skip_cnt FROM batch_job_run WHERE job_id = 'LMS-01-009' AND status = 'COMPLETED' ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(counts, (4, 3));
}

// ------------------------------------------------------------------ S3

/// The loopback S3 server and the credentials `scripts/services` made.
struct S3 {
    endpoint: String,
    key_id: String,
    secret: String,
}

fn s3_home() -> PathBuf {
    PathBuf::from(std::env::var("AIDT_S3_HOME").unwrap_or_else(|_| "/var/tmp/aidt-batch-s3".into()))
}

impl S3 {
    fn get() -> Self {
        let endpoint =
            std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:19000".into());
        let file = std::env::var("S3_CREDENTIALS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| s3_home().join("credentials.env"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; start the S3 test server with scripts/services",
                file.display()
            )
        });
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("AIDT__JOBS__LMS_01_009__S3__{name}=")))
                .unwrap_or_else(|| panic!("{name} in {}", file.display()))
                .to_string()
        };
        S3 {
            endpoint,
            key_id: value("ACCESS_KEY_ID"),
            secret: value("SECRET_ACCESS_KEY"),
        }
    }

    /// boto3 (moto's virtualenv) for what object_store does not do: buckets
    /// and the list of unfinished multipart uploads.
    fn admin(&self, script: &str, bucket: &str) -> String {
        let python = s3_home().join("venv/bin/python");
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(format!(
                "import boto3, sys\n\
                 c = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
                 aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])\n\
                 b = sys.argv[4]\n{script}"
            ))
            .args([&self.endpoint, &self.key_id, &self.secret, bucket])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn new_bucket(&self) -> String {
        let bucket = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
        self.admin("c.create_bucket(Bucket=b)", &bucket);
        bucket
    }

    fn unfinished_uploads(&self, bucket: &str) -> usize {
        self.admin(
            "print(len(c.list_multipart_uploads(Bucket=b).get('Uploads', [])))",
            bucket,
        )
        .trim()
        .parse()
        .unwrap()
    }

    fn store(&self, bucket: &str) -> impl ObjectStore {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// The job's environment for this bucket (the secret as given).
    fn job_env(&self, bucket: &str, secret: &str) -> Vec<(String, String)> {
        let s3 = |k: &str| format!("AIDT__JOBS__LMS_01_009__S3__{k}");
        vec![
            (s3("ENDPOINT"), self.endpoint.clone()),
            (s3("BUCKET"), bucket.to_string()),
            (s3("ACCESS_KEY_ID"), self.key_id.clone()),
            (s3("SECRET_ACCESS_KEY"), secret.to_string()),
            (s3("MAX_RETRIES"), "0".into()),
        ]
    }
}

async fn keys(store: &impl ObjectStore) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

fn run_with(env: &TestEnv, args: &[&str], extra: Vec<(String, String)>) -> Output {
    env.command(args).envs(extra).output().unwrap()
}

const OBJECT: &str = "llm-dataset/2026-06-30_2026-07-01/responses.jsonl.gz";
const MANIFEST: &str = "llm-dataset/2026-06-30_2026-07-01/manifest.json";

#[tokio::test]
async fn llm_dataset_uploads_in_several_parts_to_s3_with_a_matching_manifest() {
    let s3 = S3::get();
    let env = TestEnv::new().await;
    seed(env.pg()).await;
    // Enough responses of hard-to-compress items for more than one 5 MiB part.
    exec(
        env.pg(),
        &format!(
            "INSERT INTO tb_lms_lrn_result (result_id, user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, duration_sec, solved_at)
             SELECT 100 + g, CASE WHEN g % 3 = 0 THEN '{S2}'::uuid WHEN g % 3 = 1 THEN '{S1}'::uuid ELSE '{REFUSED}'::uuid END,
                    'L1', md5(g::text) || md5((g * 7)::text), 'CT', 'STD-' || md5((g * 3)::text), CASE WHEN g % 2 = 0 THEN 'Y' ELSE 'N' END,
                    (g * 37) % 10001 / 100.0, g % 997, timestamptz '2026-06-30 01:00+09' + make_interval(secs => g % 80000)
               FROM generate_series(1, 240000) g"
        ),
    )
    .await;
    let bucket = s3.new_bucket();
    let mut extra = s3.job_env(&bucket, &s3.secret);
    extra.push(("AIDT__JOBS__LMS_01_009__PART_SIZE_MIB".into(), "5".into()));
    let out = run_with(&env, &[&["lms-01-009"][..], RANGE].concat(), extra);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let store = s3.store(&bucket);
    assert_eq!(keys(&store).await, [MANIFEST, OBJECT]);
    let head = store.head(&ObjectPath::from(OBJECT)).await.unwrap();
    // A multipart object's ETag is `"<md5 of the part md5s>-<parts>"`.
    let parts: u32 = head
        .e_tag
        .as_deref()
        .and_then(|t| t.trim_matches('"').rsplit_once('-'))
        .map(|(_, n)| n.parse().unwrap())
        .unwrap_or(1);
    assert!(parts >= 2, "{:?}", head.e_tag);
    let object = store
        .get(&ObjectPath::from(OBJECT))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let manifest: Value = serde_json::from_slice(
        &store
            .get(&ObjectPath::from(MANIFEST))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], sha256_hex(&object));
    assert_eq!(manifest["bytes"], object.len());
    assert!(object.len() > 5 * 1024 * 1024);

    let text = gunzip(&object);
    assert_no_personal_data("the records", &text);
    let records = records_of(&text);
    // Of the bulk rows a third are the refusing student's.
    let bulk_eligible = (1..=240000).filter(|g| g % 3 != 2).count();
    assert_eq!(records.len(), 4 + bulk_eligible);
    assert_eq!(manifest["records"], records.len());
    assert_eq!(manifest["students"], 2);
    let (p1, p2) = (pseudonym(S1), pseudonym(S2));
    assert!(records
        .iter()
        .all(|r| r["student"] == p1.as_str() || r["student"] == p2.as_str()));
    let small: Vec<Value> = records
        .iter()
        .filter(|r| r["item_id"].as_str().unwrap().starts_with("IT-"))
        .cloned()
        .collect();
    assert_eq!(small, expected_records());
    assert_eq!(s3.unfinished_uploads(&bucket), 0);
}

#[tokio::test]
async fn llm_dataset_upload_with_wrong_credentials_or_no_bucket_exits_1_naming_endpoint_and_bucket_and_leaves_no_object(
) {
    let s3 = S3::get();
    let env = TestEnv::new().await;
    seed(env.pg()).await;
    let bucket = s3.new_bucket();
    let wrong = "wrong-secret-Zq81xPl0";
    let out = run_with(
        &env,
        &[&["lms-01-009"][..], RANGE].concat(),
        s3.job_env(&bucket, wrong),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&s3.endpoint), "{err}");
    assert!(err.contains(&bucket), "{err}");
    assert!(!err.contains(wrong), "{err}");
    // refused by the server (not a client-side failure)
    assert!(err.contains("403"), "{err}");
    assert!(!err.contains(&s3.secret), "{err}");
    assert_eq!(keys(&s3.store(&bucket)).await, Vec::<String>::new());
    assert_eq!(s3.unfinished_uploads(&bucket), 0);
    let error: String = sqlx::query_scalar(
        "SELECT error_msg FROM batch_job_run WHERE job_id = 'LMS-01-009' ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert!(error.contains(&bucket) && !error.contains(wrong), "{error}");

    let missing = format!("{bucket}-missing");
    let out = run_with(
        &env,
        &[&["lms-01-009"][..], RANGE].concat(),
        s3.job_env(&missing, &s3.secret),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&s3.endpoint) && err.contains(&missing),
        "{err}"
    );
    assert!(err.contains("404"), "{err}");
    assert!(!err.contains(&s3.secret), "{err}");
    assert_eq!(keys(&s3.store(&bucket)).await, Vec::<String>::new());
}
