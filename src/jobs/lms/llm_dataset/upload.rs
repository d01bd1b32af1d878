//! LMS-01-009 — build and upload the LLM dataset. On demand: the seed leaves
//! its schedule undecided (미정), so it has no crontab line.
//!
//! Reads the item responses (`tb_lms_lrn_result`) solved in a range of
//! business dates (`--from`, `--to`, Asia/Seoul; default the business date
//! alone) of active students who gave `PRVC_PROVIDE` consent
//! (`agree_yn = 'Y'`; deleted students and students without consent are
//! left out), joined with the item (`tb_lms_item`) and the achievement
//! standard (`tb_lms_std_sys`), and writes one JSON Lines record per
//! response: item, item type, difficulty, standard-system id, achievement
//! standard, correct, score, duration, date and the student as a keyed
//! pseudonym (HMAC-SHA256 of the user id with `[jobs.lms_01_009]
//! pseudonym_key`, hex). No names, emails, tokens, raw user ids or school ids.
//!
//! The records are streamed end to end in bounded memory: the database
//! cursor feeds the JSON encoder, the encoder gzip, gzip the sink — a
//! multipart upload to S3-compatible storage (`[jobs.lms_01_009.s3]`, parts
//! of `part_size_mib`, at most `parts_in_flight` in flight) or, with
//! `--output-dir DIR`, a file under DIR. A manifest (JSON: range, records,
//! students, bytes, SHA-256 of the object, schema version, created time) is
//! written beside it after the object. Keys: `<prefix>/<from>_<to>/
//! responses.jsonl.gz` and `…/manifest.json`, the same under DIR.
//!
//! Never a partial object under the final key: the upload is one multipart
//! upload, which S3 makes visible only when it completes, and which the job
//! aborts on any error or stop (a killed process leaves an incomplete upload
//! that is invisible; a bucket lifecycle rule for incomplete multipart
//! uploads removes it). In a directory the file is written as `….partial`
//! and renamed when complete.
//!
//! Rerun: safe; the same range replaces both objects (the same data gives
//! byte-identical objects: rows in `solved_at, result_id` order, gzip without
//! a time stamp). `--dry-run` counts the records and students and writes
//! nothing.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chrono::{NaiveDate, Utc};
use flate2::write::GzEncoder;
use futures::TryStreamExt as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{validate_settings, LlmDatasetSettings, Sink};
use crate::jobs::shared::sessions::Day;
use crate::runtime::registry::{settings_of, JobDef, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-009";

/// The record and manifest layout; bump when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// Compressed bytes gathered before they go to the sink: small against the
/// part size, large enough that a write is not a syscall per record.
const FLUSH_BYTES: usize = 256 * 1024;

/// Records between stop points and progress lines.
const RECORDS_PER_STEP: u64 = 50_000;

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "LLM DATASET 생성 및 업로드",
    name_en: "Create and upload the LLM dataset",
    about: "Reads the item responses (tb_lms_lrn_result, tb_lms_item) of --from..--to (default: the business date) of consenting students (tb_lms_user_consent) and writes them as gzip JSON Lines with keyed pseudonyms (HMAC-SHA256) and a manifest, streamed as a multipart upload to S3-compatible storage ([jobs.lms_01_009.s3]) or into --output-dir; a rerun replaces the range's objects, a failed upload leaves none.",
    schedule: Schedule::Unscheduled("the seed leaves it undecided (미정)"),
    settings: Some(settings_of::<LlmDatasetSettings>().checked_by(validate_settings)),
    args: dataset_args,
    job: Some(&LlmDataset),
    timeouts: Timeouts {
        // One snapshot streams the whole --from..--to range to storage.
        statement_secs: 4 * 3600,
        ..Timeouts::DEFAULT
    },
    ..JobDef::DEFAULTS
};

const FROM: &str = "from";
const TO: &str = "to";
const OUTPUT_DIR: &str = "output-dir";

fn dataset_args(cmd: clap::Command) -> clap::Command {
    let date = |id: &'static str, help: &'static str| {
        clap::Arg::new(id)
            .long(id)
            .value_name("YYYY-MM-DD")
            .value_parser(clap::value_parser!(NaiveDate))
            .help(help)
    };
    cmd.arg(date(
        FROM,
        "First business date of the range (default: the business date)",
    ))
    .arg(date(
        TO,
        "Last business date of the range, included (default: the business date)",
    ))
    .arg(
        clap::Arg::new(OUTPUT_DIR)
            .long(OUTPUT_DIR)
            .value_name("DIR")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Write the dataset and its manifest under DIR instead of uploading them"),
    )
}

pub struct LlmDataset;

/// The range of business dates, both included.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Range {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Range {
    /// `<from>_<to>`: the objects' directory.
    pub fn key(&self) -> String {
        format!("{}_{}", self.from, self.to)
    }
}

/// What the manifest says about the object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub job_id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub object: String,
    pub format: String,
    pub compression: String,
    pub records: u64,
    pub students: u64,
    pub bytes: u64,
    pub sha256: String,
    pub pseudonym: String,
    pub created_at: chrono::DateTime<Utc>,
}

#[async_trait::async_trait]
impl Job for LlmDataset {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: LlmDatasetSettings = ctx.own_settings()?;
        let from = ctx
            .args
            .try_get_one::<NaiveDate>(FROM)
            .ok()
            .flatten()
            .copied()
            .unwrap_or(ctx.business_date);
        let to = ctx
            .args
            .try_get_one::<NaiveDate>(TO)
            .ok()
            .flatten()
            .copied()
            .unwrap_or(ctx.business_date.max(from));
        if from > to {
            bail!("{ID}: --from {from} is after --to {to}");
        }
        let range = Range { from, to };
        let output_dir = ctx.args.try_get_one::<PathBuf>(OUTPUT_DIR).ok().flatten();
        ctx.set_detail("range", range);

        if ctx.dry_run {
            let mut tx = begin_snapshot(ctx.pg()).await?;
            let figures = count(&mut tx, range).await?;
            tx.rollback().await?;
            ctx.counts.add_read(figures.records);
            ctx.counts.add_skipped(figures.excluded);
            ctx.set_detail("would_write", figures);
            return Ok(());
        }

        let key = settings.pseudonym_key.as_ref().with_context(|| {
            format!(
                "{ID}: [jobs.lms_01_009] pseudonym_key is not set \
                 (AIDT__JOBS__LMS_01_009__PSEUDONYM_KEY)"
            )
        })?;
        let pseudonyms = Pseudonyms::new(key);
        let dir = format!("{}/{}", settings.prefix.trim_matches('/'), range.key());
        let object = format!("{dir}/responses.jsonl.gz");
        let manifest_key = format!("{dir}/manifest.json");
        let mut sink = match output_dir {
            Some(root) => Sink::file(root, &object).await?,
            None => Sink::s3(&settings, &object).await?,
        };
        let where_to = sink.describe();
        tracing::info!(%where_to, from = %range.from, to = %range.to, "writing the dataset");
        let written = match write_records(ctx, range, &pseudonyms, &mut sink).await {
            Ok(written) => written,
            Err(e) => {
                sink.abort().await;
                return Err(e);
            }
        };
        sink.finish().await?;
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            job_id: ID.into(),
            from: range.from,
            to: range.to,
            object: object.clone(),
            format: "jsonl".into(),
            compression: "gzip".into(),
            records: written.records,
            students: written.students,
            bytes: written.bytes,
            sha256: written.sha256.clone(),
            pseudonym: "hex(HMAC-SHA256(pseudonym_key, user_id as lower-case hyphenated UUID))"
                .into(),
            created_at: Utc::now(),
        };
        let body = serde_json::to_vec_pretty(&manifest)?;
        sink.put_manifest(&manifest_key, body).await?;
        ctx.counts.add_read(written.records);
        ctx.counts.add_written(written.records);
        ctx.counts.add_skipped(written.excluded);
        ctx.set_detail("object", &where_to);
        ctx.set_detail("manifest", &manifest);
        ctx.set_detail("excluded_responses", written.excluded);
        Ok(())
    }
}

/// The HMAC-SHA256 keyed pseudonyms: the key schedule is done once.
struct Pseudonyms {
    base: Hmac<Sha256>,
}

impl Pseudonyms {
    fn new(key: &SecretString) -> Self {
        Self {
            base: Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
                .expect("HMAC takes a key of any length"),
        }
    }

    /// Hex of HMAC-SHA256(key, the user id as lower-case hyphenated text).
    fn of(&self, user_id: uuid::Uuid, out: &mut [u8; 64]) {
        let mut mac = self.base.clone();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        mac.update(user_id.hyphenated().encode_lower(&mut text).as_bytes());
        hex::encode_to_slice(mac.finalize().into_bytes(), out).expect("64 hex digits");
    }
}

/// Counts of a range, in the same snapshot as the records.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Figures {
    pub records: u64,
    pub students: u64,
    /// Responses of the range left out: no consent, deleted, not a student.
    pub excluded: u64,
}

#[derive(Debug)]
struct Written {
    records: u64,
    students: u64,
    excluded: u64,
    bytes: u64,
    sha256: String,
}

/// The responses of the range and, in a column each, whether the student is
/// an active student and consented; binds `$1`, `$2`: the range's instants.
const COUNT_SQL: &str = "SELECT count(*) FILTER (WHERE u.user_id IS NOT NULL AND c.user_id IS NOT NULL),
            count(DISTINCT r.user_id) FILTER (WHERE u.user_id IS NOT NULL AND c.user_id IS NOT NULL),
            count(*)
       FROM tb_lms_lrn_result r
       LEFT JOIN tb_lms_user u
         ON u.user_id = r.user_id AND u.user_type = 'S' AND u.del_yn = 'N'
       LEFT JOIN tb_lms_user_consent c
         ON c.user_id = r.user_id AND c.consent_type = 'PRVC_PROVIDE' AND c.agree_yn = 'Y'
      WHERE r.solved_at >= $1 AND r.solved_at < $2";

/// The records, in a stable order (a rerun over the same data writes the
/// same bytes); the same students as [`COUNT_SQL`] counts.
const RECORDS_SQL: &str =
    "SELECT r.user_id, r.item_id, i.item_type, i.difficulty, r.std_sys_id, s.achv_std_cd,
            r.correct_yn = 'Y' AS correct, r.score::float8 AS score, r.duration_sec,
            to_char(r.solved_at AT TIME ZONE 'Asia/Seoul', 'YYYY-MM-DD') AS solved_date
       FROM tb_lms_lrn_result r
       JOIN tb_lms_user u
         ON u.user_id = r.user_id AND u.user_type = 'S' AND u.del_yn = 'N'
       JOIN tb_lms_user_consent c
         ON c.user_id = r.user_id AND c.consent_type = 'PRVC_PROVIDE' AND c.agree_yn = 'Y'
       LEFT JOIN tb_lms_item i ON i.item_id = r.item_id
       LEFT JOIN tb_lms_std_sys s ON s.std_sys_id = r.std_sys_id
      WHERE r.solved_at >= $1 AND r.solved_at < $2
      ORDER BY r.solved_at, r.result_id";

async fn begin_snapshot(
    pg: &sqlx::PgPool,
) -> anyhow::Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    let mut tx = pg.begin().await?;
    // Counts and records from one snapshot, so the manifest matches the object.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

async fn count(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    range: Range,
) -> anyhow::Result<Figures> {
    let (start, end) = instants(range);
    let (records, students, all): (i64, i64, i64) = sqlx::query_as(COUNT_SQL)
        .bind(start)
        .bind(end)
        .fetch_one(&mut **tx)
        .await
        .with_context(|| {
            format!(
                "{ID}: Failed to count the responses of {}..{}",
                range.from, range.to
            )
        })?;
    Ok(Figures {
        records: records as u64,
        students: students as u64,
        excluded: (all - records) as u64,
    })
}

fn instants(range: Range) -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    (Day::new(range.from).start, Day::new(range.to).end)
}

/// One response as the database gives it.
#[derive(sqlx::FromRow)]
struct Row {
    user_id: uuid::Uuid,
    item_id: String,
    item_type: Option<String>,
    difficulty: Option<i16>,
    std_sys_id: String,
    achv_std_cd: Option<String>,
    correct: bool,
    score: f64,
    duration_sec: i32,
    solved_date: String,
}

/// One JSON Lines record (schema version [`SCHEMA_VERSION`]).
#[derive(Serialize)]
struct Record<'a> {
    student: &'a str,
    item_id: &'a str,
    item_type: Option<&'a str>,
    difficulty: Option<i16>,
    std_sys_id: &'a str,
    achv_std_cd: Option<&'a str>,
    correct: bool,
    score: f64,
    duration_sec: i32,
    date: &'a str,
}

#[tracing::instrument(skip_all, fields(from = %range.from, to = %range.to), err)]
async fn write_records(
    ctx: &JobContext,
    range: Range,
    pseudonyms: &Pseudonyms,
    sink: &mut Sink,
) -> anyhow::Result<Written> {
    let mut tx = begin_snapshot(ctx.pg()).await?;
    let figures = count(&mut tx, range).await?;
    let (start, end) = instants(range);
    let mut rows = sqlx::query_as::<_, Row>(RECORDS_SQL)
        .bind(start)
        .bind(end)
        .fetch(&mut *tx);

    let mut gz = GzEncoder::new(
        Vec::with_capacity(2 * FLUSH_BYTES),
        flate2::Compression::default(),
    );
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut records = 0u64;
    let mut student = [0u8; 64];
    while let Some(row) = rows.try_next().await.with_context(|| {
        format!(
            "{ID}: Failed to read the responses of {}..{}",
            range.from, range.to
        )
    })? {
        pseudonyms.of(row.user_id, &mut student);
        let record = Record {
            student: std::str::from_utf8(&student).expect("hex is ASCII"),
            item_id: &row.item_id,
            item_type: row.item_type.as_deref(),
            difficulty: row.difficulty,
            std_sys_id: &row.std_sys_id,
            achv_std_cd: row.achv_std_cd.as_deref(),
            correct: row.correct,
            score: row.score,
            duration_sec: row.duration_sec,
            date: &row.solved_date,
        };
        serde_json::to_writer(&mut gz, &record)?;
        gz.write_all(b"\n")?;
        records += 1;
        ctx.progress.set_position(records, figures.records);
        if gz.get_ref().len() >= FLUSH_BYTES {
            let chunk = std::mem::take(gz.get_mut());
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            sink.write(chunk).await?;
        }
        if records % RECORDS_PER_STEP == 0 {
            ctx.stop_point()?;
            tracing::info!(records, bytes, "records written so far");
        }
    }
    drop(rows);
    let chunk = gz.finish()?;
    hasher.update(&chunk);
    bytes += chunk.len() as u64;
    sink.write(chunk).await?;
    tx.rollback().await?;
    if records != figures.records {
        bail!(
            "{ID}: read {records} responses but counted {} in the same snapshot",
            figures.records
        );
    }
    Ok(Written {
        records,
        students: figures.students,
        excluded: figures.excluded,
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pseudonym_is_the_hex_hmac_of_the_hyphenated_id() {
        let p = Pseudonyms::new(&SecretString::from("key"));
        let mut out = [0u8; 64];
        let id = uuid::Uuid::nil();
        p.of(id, &mut out);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"00000000-0000-0000-0000-000000000000");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            hex::encode(mac.finalize().into_bytes())
        );
    }
}
