//! Benchmark data of LMS-01-007 and DC-01-003 (`scripts/bench-privacy`):
//! an LMS where many students were deleted long ago, and the few rows an
//! LMS and an LRS write for them afterwards.
//!
//! Generated set-based in PostgreSQL (`generate_series`, ids `md5(…)::uuid`):
//! `--deleted` students without `PRVC_PROVIDE` consent, registered a year
//! before, already cleared (`del_yn = 'Y'`, no rows left), and `--active`
//! students who consented, each with a realistic share of every table the
//! privacy jobs delete from (see [`ACTIVE_ROWS`]) and one error row. In
//! MongoDB, `--statements` statements and one KERIS document per active
//! student, inserted in batches. `--late N` instead adds N rows and
//! documents for deleted students (half in the LMS tables, half as late
//! statements, KERIS documents and error rows; every third document's
//! `user_id` a BSON UUID) and prints what it added per table.

use anyhow::Context as _;
use futures::StreamExt as _;
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use uuid::Uuid;

use aidt_batch::context::AppContext;
use aidt_batch::contract::{KERIS_BATCH_DATA, STATEMENTS};

/// `aidt-dev bench-privacy`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchPrivacyArgs {
    /// Students deleted long ago (no consent, grace period long passed)
    #[arg(long, default_value_t = 100_000)]
    pub deleted: i64,
    /// Students with consent and learning data
    #[arg(long, default_value_t = 100_000)]
    pub active: i64,
    /// Statements per active student in lrs.statements
    #[arg(long, default_value_t = 3)]
    pub statements: i64,
    /// Instead of generating: add this many rows and documents written
    /// after the deletion for deleted students
    #[arg(long)]
    pub late: Option<i64>,
}

/// Rows per active student: (table, rows, insert of row `k` of student `u`).
const ACTIVE_ROWS: [(&str, i64, &str); 11] = [
    ("tb_lms_lrn_result", 20, "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, duration_sec, solved_at) SELECT u, 'BL1', 'I' || k, 'C1', 'SS' || (k % 5), 'Y', 80, 30, now() - make_interval(days => k)"),
    ("tb_lms_lrn_session", 5, "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at) SELECT u, 'BL1', now() - make_interval(days => k), now() - make_interval(days => k) + interval '40 minutes'"),
    ("tb_lms_lrn_progress", 5, "INSERT INTO tb_lms_lrn_progress (user_id, std_sys_id, progress_rate, upd_dt) SELECT u, 'SS' || k, 50, now()"),
    ("tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys", 5, "INSERT INTO tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys (user_id, std_sys_id, lecture_code, score, upd_dt) SELECT u, 'SS' || k, 'BL1', 80, now()"),
    ("tb_lms_keris_token", 1, "INSERT INTO tb_lms_keris_token SELECT u, 'token', 'access', now()"),
    ("tb_lms_assignment_submit", 5, "INSERT INTO tb_lms_assignment_submit SELECT k, u, now()"),
    ("tb_lms_ntcn_msg", 5, "INSERT INTO tb_lms_ntcn_msg (user_id, msg_type, ref_key, title, body, created_at) SELECT u, 'PRAISE', 'k' || k, 'Well done', 'Well done', now()"),
    ("tb_lms_stdnt_cmpt_idx_daily", 10, "INSERT INTO tb_lms_stdnt_cmpt_idx_daily (base_dt, user_id, solved_cnt) SELECT current_date - k, u, 2"),
    ("tb_lms_stdnt_lrn_stats_daily", 10, "INSERT INTO tb_lms_stdnt_lrn_stats_daily (base_dt, user_id, lecture_code, item_cnt) SELECT current_date - k, u, 'BL1', 2"),
    ("tb_lms_access_log", 20, "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at) SELECT u, '/page', '10.0.0.1', now() - make_interval(hours => k)"),
    ("tb_lms_login_hist", 10, "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, ip) SELECT u, 'S', now() - make_interval(days => k), '10.0.0.1'"),
];

/// The id of deleted (`d`) or active (`a`) student `n`, in SQL over `s`.
fn student_sql(kind: &str) -> String {
    format!("md5('bench-privacy-{kind}-' || s)::uuid")
}

pub async fn bench_privacy(app: &AppContext, args: &BenchPrivacyArgs) -> anyhow::Result<()> {
    match args.late {
        Some(n) => write_late(app, args, n).await,
        None => generate(app, args).await,
    }
}

/// The students and the active students' rows and documents.
async fn generate(app: &AppContext, args: &BenchPrivacyArgs) -> anyhow::Result<()> {
    let (deleted, active) = (student_sql("d"), student_sql("a"));
    let mut steps = vec![
        format!("INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, grade, class_no, reg_dt, del_yn)
                 SELECT {deleted}, '00000000-0000-4000-8000-0000000000b1', 'S', 'BS1', 3, 1, now() - interval '400 days', 'Y'
                   FROM generate_series(1, {}) s", args.deleted),
        format!("INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, grade, class_no, user_nm, reg_dt)
                 SELECT {active}, '00000000-0000-4000-8000-0000000000b1', 'S', 'BS1', 3, 1, 'Student ' || s, now() - interval '400 days'
                   FROM generate_series(1, {}) s", args.active),
        format!("INSERT INTO tb_lms_user_consent SELECT {active}, 'PRVC_PROVIDE', 'Y', now() - interval '400 days', NULL
                   FROM generate_series(1, {}) s", args.active),
        format!("INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, statement_id, err_code, created_at, upd_dt)
                 SELECT 'DC-01-001', current_date, '00000000-0000-4000-8000-0000000000b1', {active}, md5('stmt' || s)::uuid, 'E1', now(), now()
                   FROM generate_series(1, {}) s", args.active),
    ];
    for (_, rows, insert) in ACTIVE_ROWS {
        steps.push(format!(
            "{insert} FROM (SELECT {active} AS u FROM generate_series(1, {}) s) x, generate_series(1, {rows}) k",
            args.active
        ));
    }
    for sql in &steps {
        sqlx::query(sql)
            .execute(&app.pg)
            .await
            .with_context(|| format!("Failed to generate the privacy benchmark data: {sql}"))?;
    }
    sqlx::query("ANALYZE")
        .execute(&app.pg)
        .await
        .context("Failed to ANALYZE")?;
    let active_ids: Vec<Uuid> =
        sqlx::query_scalar(&format!("SELECT {active} FROM generate_series(1, $1) s"))
            .bind(args.active)
            .fetch_all(&app.pg)
            .await?;
    let statements = insert_docs(app, STATEMENTS, &active_ids, args.statements, false).await?;
    let batch_data = insert_docs(app, KERIS_BATCH_DATA, &active_ids, 1, false).await?;
    println!(
        "bench-privacy: {} deleted students, {} active ({} LMS rows each), {statements} statements, {batch_data} KERIS documents",
        args.deleted,
        args.active,
        ACTIVE_ROWS.iter().map(|(_, n, _)| n).sum::<i64>()
    );
    Ok(())
}

/// `per_student` documents of each of `students` in `collection`, 2,000 per
/// `insert_many`, four in flight; with `late`, every third `user_id` a
/// BSON UUID. Returns how many.
async fn insert_docs(
    app: &AppContext,
    collection: &str,
    students: &[Uuid],
    per_student: i64,
    late: bool,
) -> anyhow::Result<u64> {
    let coll = app.mongo.collection::<Document>(collection);
    let per_batch = (2_000 / per_student.max(1) as usize).max(1);
    let batches = students.chunks(per_batch).enumerate().map(|(b, chunk)| {
        chunk
            .iter()
            .flat_map(|id| (0..per_student).map(move |k| (*id, k)))
            .enumerate()
            .map(|(i, (id, k))| bench_doc(id, k, late && (b * per_batch + i) % 3 == 0))
            .collect::<Vec<Document>>()
    });
    let mut inserts = futures::stream::iter(batches.map(|batch| {
        let coll = coll.clone();
        async move { coll.insert_many(batch).ordered(false).await }
    }))
    .buffer_unordered(4);
    let mut n = 0;
    while let Some(done) = inserts.next().await {
        n += done
            .with_context(|| format!("Failed to insert benchmark documents into {collection}"))?
            .inserted_ids
            .len() as u64;
    }
    Ok(n)
}

/// One document of student `id` (about 600 bytes, like a stored statement's
/// envelope and a short statement).
fn bench_doc(id: Uuid, k: i64, binary_id: bool) -> Document {
    let user_id = if binary_id {
        Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: id.as_bytes().to_vec(),
        })
    } else {
        Bson::String(id.to_string())
    };
    let now = mongodb::bson::DateTime::now();
    doc! {
        "_id": mongodb::bson::oid::ObjectId::new(),
        "user_id": user_id,
        "partner_id": "00000000-0000-4000-8000-0000000000b1",
        "base_dt": "2026-06-15",
        "status": "SENT",
        "timestamp": now,
        "stored": now,
        "statement": {
            "verb": { "id": "http://adlnet.gov/expapi/verbs/answered" },
            "object": { "id": format!("http://aidt.example/items/{k}") },
            "result": { "score": { "scaled": 0.8 }, "success": true, "duration": "PT30S" },
            "padding": "x".repeat(300),
        },
    }
}

/// `n` rows and documents for deleted students, written after their
/// deletion: half in the LMS tables (round robin), the rest split between
/// statements, KERIS documents and error rows.
async fn write_late(app: &AppContext, args: &BenchPrivacyArgs, n: i64) -> anyhow::Result<()> {
    let deleted = student_sql("d");
    let lms = n / 2;
    let mut report = Vec::new();
    for (i, (table, _, insert)) in ACTIVE_ROWS.iter().enumerate() {
        let rows =
            lms / ACTIVE_ROWS.len() as i64 + i64::from((i as i64) < lms % ACTIVE_ROWS.len() as i64);
        // Student s * 7919 of the deleted ones, k = 1000 + s: new keys.
        let sql = format!(
            "{insert} FROM (SELECT {deleted} AS u, 1000 + s AS k
                              FROM generate_series(1, {rows}) g, LATERAL (SELECT (g * 7919) % {} + 1 AS s) x) y",
            args.deleted
        );
        sqlx::query(&sql)
            .execute(&app.pg)
            .await
            .with_context(|| format!("Failed to write late rows into {table}"))?;
        report.push((table.to_string(), rows));
    }
    let docs = n - lms;
    let (statements, batch_data) = (docs / 3 + docs % 3, docs / 3);
    let errors = docs / 3;
    sqlx::query(&format!(
        "INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, statement_id, err_code, created_at, upd_dt)
         SELECT 'DC-01-001', current_date, '00000000-0000-4000-8000-0000000000b1', {deleted}, gen_random_uuid(), 'E1', now(), now()
           FROM generate_series(1, $1) g, LATERAL (SELECT (g * 104729) % $2 + 1 AS s) x"
    ))
    .bind(errors)
    .bind(args.deleted)
    .execute(&app.pg)
    .await
    .context("Failed to write late error rows")?;
    let owners: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT {deleted} FROM generate_series(1, $1) g, LATERAL (SELECT (g * 15485863) % $2 + 1 AS s) x"
    ))
    .bind(statements.max(batch_data))
    .bind(args.deleted)
    .fetch_all(&app.pg)
    .await?;
    insert_docs(app, STATEMENTS, &owners[..statements as usize], 1, true).await?;
    insert_docs(
        app,
        KERIS_BATCH_DATA,
        &owners[..batch_data as usize],
        1,
        true,
    )
    .await?;
    report.push((STATEMENTS.to_string(), statements));
    report.push((KERIS_BATCH_DATA.to_string(), batch_data));
    report.push(("tb_dc_error_data_info".to_string(), errors));
    for (table, rows) in report {
        println!("late {table} {rows}");
    }
    Ok(())
}
