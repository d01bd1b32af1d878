//! `aidt-batch dev seed` — fills every data-contract table and the LRS's
//! `statements` collection with synthetic, consistent data, so that every
//! job can be developed, demonstrated and load-tested without production
//! data (which is personal data of minors and must not leave production).
//!
//! What it writes: schools of the three levels, teachers, students (with a
//! mix of consent states, tokens, registration dates) and a few parents;
//! courses, standard-system ids and LCMS content with partial LMS copies;
//! the business date's learning activity (results, sessions, progress,
//! teacher-dashboard rows, assignments, notifications) and the previous
//! week's daily statistics; logs over the last ~400 days; the back-office
//! tables; a few DC error rows; and `--statements` xAPI statements of the
//! AIDT profile on the business date (see `statements.rs`).
//! `notify.rs` adds learning streaks and quizzes due right after the
//! business date for the notification jobs (LMS-01-004/005). `world.rs` and
//! `curriculum.rs` build one in-memory model that every writer draws from,
//! which is what keeps ids consistent across tables and with MongoDB.
//!
//! Deterministic: values come from `StdRng` streams derived from `--seed`
//! (one stream per table group) and times from `--date` (the business date,
//! Asia/Seoul; default yesterday), never from the clock, so the same seed,
//! sizes and date give identical data (and, in an empty database, identical
//! generated ids).
//!
//! Rerun: refuses when a contract table, `statements` or `keris_batch_data`
//! already holds data, because mixing two generated worlds would break the
//! consistency the jobs' tests rely on. `--reset` first truncates every
//! contract table (restarting their id sequences) and drops `statements`
//! and `keris_batch_data`. The PostgreSQL part is one transaction; MongoDB
//! has multi-document transactions only on replica sets, so the statements are
//! written while that transaction is open and it commits only after the
//! last statement is in: a failed run leaves no rows, at most statements,
//! which the next run's emptiness check reports.
//!
//! Fast: PostgreSQL rows go in set-based (`UNNEST` of bound arrays,
//! `CHUNK` rows per statement) and statements with `insert_many` in batches,
//! generated while the previous batch is being written.

mod activity;
mod bo;
mod content;
mod curriculum;
pub(crate) mod gen;
mod logs;
mod notify;
mod reference;
pub(crate) mod statements;
mod world;

use anyhow::{bail, Context as _};
use mongodb::bson::{doc, Document};
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use aidt_batch::context::AppContext;
use gen::Day;
use world::World;

/// How the seed's `statements` store the dots of xAPI extension keys (the
/// legacy `&46;` convention); readers accept it and raw dots alike.
pub use statements::{stored_key, STORED_DOT};

/// Sizes and seed of the generated data.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Number of students
    #[arg(long, default_value_t = 1000)]
    pub students: u32,
    /// Number of xAPI statements written to lrs.statements
    #[arg(long, default_value_t = 10_000)]
    pub statements: u32,
    /// Business date the learning activity belongs to [default: yesterday, Asia/Seoul]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
    /// Random seed; the same seed gives the same data
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of schools, at least 3 (levels E, M, H in turn) [default: one per 150 students]
    #[arg(long)]
    pub schools: Option<u32>,
    /// Empty the contract tables and drop lrs.statements and keris_batch_data first
    #[arg(long)]
    pub reset: bool,
}

impl SeedArgs {
    /// The defaults of the command line, for callers in code (tests).
    pub fn new(students: u32, statements: u32, date: Option<chrono::NaiveDate>, seed: u64) -> Self {
        Self {
            students,
            statements,
            date,
            seed,
            schools: None,
            reset: false,
        }
    }
}

/// What was written.
#[derive(Debug, Default)]
pub struct SeedReport {
    pub lines: Vec<(String, u64)>,
}

impl SeedReport {
    /// Adds `n` to the line of `what` (several writers may fill one table).
    fn add(&mut self, what: impl Into<String>, n: u64) {
        let what = what.into();
        match self.lines.iter_mut().find(|(w, _)| *w == what) {
            Some(line) => line.1 += n,
            None => self.lines.push((what, n)),
        }
    }

    /// The count written for `what`, if it was written.
    pub fn count(&self, what: &str) -> Option<u64> {
        self.lines.iter().find(|(w, _)| w == what).map(|(_, n)| *n)
    }
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (what, n) in &self.lines {
            writeln!(f, "{what:<40} {n:>10}")?;
        }
        Ok(())
    }
}

/// Every table of the data contract (../shared/spec/data-contract.md), in
/// its order: what `--reset` empties and the emptiness check looks at.
pub const CONTRACT_TABLES: [&str; 36] = [
    "tb_lms_school",
    "tb_lms_user",
    "tb_lms_user_consent",
    "tb_lms_keris_token",
    "tb_lms_course",
    "tb_lms_lecture",
    "tb_lms_lecture_member",
    "tb_lms_std_sys",
    "tb_lcms_content",
    "tb_lcms_item",
    "tb_lms_content",
    "tb_lms_item",
    "tb_lms_kc_std_map",
    "tb_lms_course_std_sys",
    "tb_lms_lrn_result",
    "tb_lms_lrn_session",
    "tb_lms_lrn_progress",
    "tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys",
    "tb_lms_assignment",
    "tb_lms_assignment_submit",
    "tb_lms_ntcn_msg",
    "tb_lms_stdnt_cmpt_idx_daily",
    "tb_lms_stdnt_lrn_stats_daily",
    "tb_lms_access_log",
    "tb_lms_api_log",
    "tb_lms_login_hist",
    "tb_bo_admin_user",
    "tb_bo_pm_schedule",
    "tb_bo_service_status",
    "tb_bo_notice",
    "tb_bo_lms_conn_stats_daily",
    "tb_bo_lms_login_stats_daily",
    "tb_bo_lms_login_user_stats",
    "tb_bo_mail_recipient",
    "tb_bo_mail_send_hist",
    "tb_dc_error_data_info",
];

/// The collection LRS-01-001/002 fill from `statements`; stale once the
/// statements are regenerated, so `--reset` drops it too.
pub const KERIS_BATCH_DATA: &str = "keris_batch_data";

/// Rows per INSERT: large enough that round trips do not dominate, small
/// enough to keep each bound array (and the server's memory for it) modest.
const CHUNK: usize = 5_000;

/// Default schools: one per this many students.
const STUDENTS_PER_SCHOOL: u32 = 150;

pub async fn seed(app: &AppContext, args: &SeedArgs) -> anyhow::Result<SeedReport> {
    let partners = configured_partners(app)?;
    let date = args.date.unwrap_or_else(aidt_batch::time::yesterday_seoul);
    if args.students == 0 {
        bail!("--students must be at least 1");
    }
    let schools = args
        .schools
        .unwrap_or((args.students / STUDENTS_PER_SCHOOL).max(3));
    if schools < 3 {
        bail!("--schools must be at least 3, one per school level (E, M, H)");
    }
    if !args.reset {
        ensure_empty(app).await?;
    }
    tracing::info!(%date, seed = args.seed, students = args.students, statements = args.statements, schools, "generating synthetic data");

    let world = World::build(
        args.seed,
        Day::new(date),
        partners,
        schools as usize,
        args.students as usize,
    );

    if args.reset {
        drop_collections(&app.mongo).await?;
    }
    // Dropped by --reset, or never created: the jobs rely on these indexes
    // (the LRS's, and the batch's own on keris_batch_data, as `migrate`
    // makes them).
    crate::schema::apply_mongo(&app.mongo).await?;
    aidt_batch::commands::migrate::ensure_mongo_indexes(&app.mongo).await?;

    let mut tx = app
        .pg
        .begin()
        .await
        .context("Failed to begin the seed transaction")?;
    if args.reset {
        truncate_contract_tables(&mut tx).await?;
    }
    let (pg_lines, stmt_lines) = tokio::try_join!(
        write_tables(&mut tx, &world, args.seed),
        statements::write(&app.mongo, &world, args.seed, args.statements)
    )?;
    tx.commit()
        .await
        .context("Failed to commit the seed transaction")?;

    let mut report = SeedReport::default();
    for (what, n) in pg_lines.into_iter().chain(stmt_lines) {
        report.add(what, n);
    }
    Ok(report)
}

/// The Partner-IDs of the configuration. Users, statements and error rows
/// belong to these, so the KERIS jobs accept them; the ids are credentials,
/// so errors name the partner's key, never its value.
fn configured_partners(app: &AppContext) -> anyhow::Result<Vec<Uuid>> {
    let partners: Vec<Uuid> = app
        .settings
        .keris
        .partner_ids()?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    if partners.is_empty() {
        bail!("no KERIS partner is configured (keris.partners.<name>.partner_id): the generated users need one");
    }
    Ok(partners)
}

/// Refuses to add a second generated world on top of existing data.
async fn ensure_empty(app: &AppContext) -> anyhow::Result<()> {
    let sql = CONTRACT_TABLES
        .iter()
        .map(|t| format!("SELECT '{t}'::text WHERE EXISTS (SELECT 1 FROM {t})"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let tables: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&app.pg).await.context(
        "Failed to check whether the data-contract tables are empty (are they created? see `aidt-batch dev schema`)",
    )?;
    // A few names say enough; all 36 would bury the hint.
    let mut filled: Vec<String> = tables.iter().take(3).cloned().collect();
    if tables.len() > 3 {
        filled.push(format!("{} more tables", tables.len() - 3));
    }
    for collection in [aidt_batch::contract::STATEMENTS, KERIS_BATCH_DATA] {
        let any = app
            .mongo
            .collection::<Document>(collection)
            .find_one(doc! {})
            .await
            .with_context(|| format!("Failed to check whether {collection} is empty"))?;
        if any.is_some() {
            filled.push(format!("{}.{collection}", app.mongo.name()));
        }
    }
    if !filled.is_empty() {
        bail!(
            "refusing to seed: the databases already hold data ({}); run `aidt-batch dev seed --reset …` to empty \
             the data-contract tables and drop {db}.statements and {db}.{KERIS_BATCH_DATA} first",
            filled.join(", "),
            db = app.mongo.name()
        );
    }
    Ok(())
}

async fn drop_collections(db: &mongodb::Database) -> anyhow::Result<()> {
    for collection in [aidt_batch::contract::STATEMENTS, KERIS_BATCH_DATA] {
        db.collection::<Document>(collection)
            .drop()
            .await
            .with_context(|| format!("Failed to drop {collection}"))?;
    }
    Ok(())
}

async fn truncate_contract_tables(conn: &mut PgConnection) -> anyhow::Result<()> {
    let sql = format!("TRUNCATE {} RESTART IDENTITY", CONTRACT_TABLES.join(", "));
    sqlx::query(&sql)
        .execute(conn)
        .await
        .context("Failed to truncate the data-contract tables")?;
    Ok(())
}

/// Every PostgreSQL table, in the contract's order, on one connection (the
/// transaction's).
async fn write_tables(
    conn: &mut PgConnection,
    world: &World,
    seed: u64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut lines = Vec::new();
    lines.extend(reference::write(conn, world).await?);
    lines.extend(content::write(conn, world).await?);
    lines.extend(activity::write(conn, world, seed).await?);
    lines.extend(logs::write(conn, world, seed).await?);
    lines.extend(bo::write(conn, world, seed).await?);
    lines.extend(notify::write(conn, world, seed).await?);
    Ok(lines)
}

type Query = sqlx::query::Query<'static, Postgres, PgArguments>;

/// Inserts `rows` in chunks of `CHUNK`: `sql` takes one bound array per
/// column (`INSERT … SELECT * FROM UNNEST($1::uuid[], …)`), and `bind` binds
/// a chunk's columns to it. Returns the number of rows inserted.
async fn insert<T>(
    conn: &mut PgConnection,
    table: &str,
    rows: &[T],
    sql: &'static str,
    bind: impl Fn(Query, &[T]) -> Query,
) -> anyhow::Result<(String, u64)> {
    let mut n = 0;
    for chunk in rows.chunks(CHUNK) {
        n += bind(sqlx::query(sql), chunk)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("Failed to insert {table}"))?
            .rows_affected();
    }
    Ok((table.to_string(), n))
}

/// One column of a chunk, for binding.
fn col<T, U>(rows: &[T], f: impl Fn(&T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}
