//! Benchmark helpers: fill `keris_batch_data` with a day of `READY` KERIS
//! statements, and read them back with a plain cursor (the baseline DC-01-001
//! is compared with in `scripts/bench-transfer`).

use std::time::Instant;

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use serde_json::json;

use aidt_batch::context::AppContext;
use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::jobs::dc::send_statements;
use aidt_batch::jobs::lrs::aggregation::in_flight::run_in_flight;
use aidt_batch::jobs::shared::{keris_batch_data, transfer};
use aidt_batch::xapi;

/// `aidt-batch dev bench-data`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchDataArgs {
    /// READY statements to write for the business date, spread over the configured partners
    #[arg(long, default_value_t = 100_000)]
    pub statements: u64,
    /// Business date (YYYY-MM-DD) [default: yesterday, Asia/Seoul]
    #[arg(long)]
    pub date: Option<NaiveDate>,
    /// Drop keris_batch_data first (and re-create its indexes)
    #[arg(long)]
    pub reset: bool,
}

/// `aidt-batch dev scan`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Business date (YYYY-MM-DD) [default: yesterday, Asia/Seoul]
    #[arg(long)]
    pub date: Option<NaiveDate>,
    /// Scan the day's source statements as LRS-01-001 reads them (non-voided,
    /// sorted by user) instead of the READY keris_batch_data
    #[arg(long)]
    pub source: bool,
    /// With --source: also write what LRS-01-001 writes, without aggregating
    /// — one keris_batch_data document per distinct (student, verb id,
    /// object id), the group's last source statement as it is stored —
    /// `[jobs.lrs_aggregate] writes_in_flight` batches being inserted while
    /// the next is read, as the job does: the
    /// database work LRS-01-001 cannot avoid. They go to a fresh collection
    /// with keris_batch_data's indexes, dropped afterwards (untimed), so
    /// keris_batch_data is left as it was for the job.
    #[arg(long, requires = "source")]
    pub insert: bool,
    /// Read the READY keris_batch_data without DC-01-001's sort by
    /// (user_hash, _id) (to measure what the sort is worth)
    #[arg(long, conflicts_with = "source")]
    pub unsorted: bool,
}

/// `aidt-dev read-and-mark`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadAndMarkArgs {
    /// Business date (YYYY-MM-DD) [default: yesterday, Asia/Seoul]
    #[arg(long)]
    pub date: Option<NaiveDate>,
    /// Statements per request [default: keris.max_statements_per_request]
    #[arg(long)]
    pub per_request: Option<usize>,
    /// Requests being marked at once [default: keris.max_concurrency]
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// SENT marks per update command [default: jobs.keris_transfer.sent_marks_per_command]
    #[arg(long)]
    pub marks_per_command: Option<usize>,
}

fn date_or_yesterday(date: Option<NaiveDate>) -> NaiveDate {
    date.unwrap_or_else(aidt_batch::time::yesterday_seoul)
}

/// Writes `statements` READY documents (1,000 per insert, 4 inserts in flight).
pub async fn bench_data(app: &AppContext, args: &BenchDataArgs) -> anyhow::Result<()> {
    let date = date_or_yesterday(args.date);
    let partners: Vec<String> =
        aidt_batch::jobs::shared::partners::partners_by_id(&app.settings.keris)?
            .into_keys()
            .collect();
    anyhow::ensure!(
        !partners.is_empty(),
        "no KERIS partner is configured (keris.partners.<name>.partner_id)"
    );
    let coll = app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    if args.reset {
        // Dropping, not deleting: one cheap command whatever the size
        // (deleting 1M documents is 1M index updates).
        coll.drop()
            .await
            .context("Failed to drop keris_batch_data")?;
        aidt_batch::commands::migrate::apply(app).await?;
    }
    let settings = &app.settings.jobs.lrs_aggregate;
    let started = Instant::now();
    let batches = (0..args.statements).step_by(1000).map(|first| {
        let last = (first + 1000).min(args.statements);
        let docs: anyhow::Result<Vec<Document>> = (first..last)
            .map(|i| bench_document(settings, date, &partners[(i as usize) % partners.len()], i))
            .collect();
        let coll = coll.clone();
        async move {
            coll.insert_many(docs?)
                .ordered(false)
                .await
                .context("Failed to insert into keris_batch_data")
        }
    });
    futures::stream::iter(batches)
        .buffer_unordered(4)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {} READY statements of {date} in {secs:.1} s ({:.0}/s)",
        args.statements,
        args.statements as f64 / secs
    );
    Ok(())
}

/// One valid AIDT-profile statement: student `i / 20`, item `i`.
fn bench_document(
    settings: &aidt_batch::config::LrsAggregateSettings,
    date: NaiveDate,
    partner_id: &str,
    i: u64,
) -> anyhow::Result<Document> {
    let user = uuid::Uuid::new_v5(
        &settings.id_namespace,
        format!("bench-user-{}", i / 20).as_bytes(),
    )
    .to_string();
    let verb = "http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/submitted";
    let object = format!("https://aidt.example.kr/bench/content/c{}/item/{i}", i % 50);
    let id = xapi::statement_id(&settings.id_namespace, date, &user, verb, &object).to_string();
    let statement = json!({
        "id": id,
        "actor": {"objectType": "Agent", "account": {"homePage": settings.home_page, "name": user}},
        "verb": {"id": verb, "display": {"en-US": "submitted"}},
        "object": {"id": object, "objectType": "Activity", "definition": {"type": "http://aidtbook.kr/xapi/activity-type/question"}},
        "result": {
            "score": {"raw": i % 101}, "success": i % 3 != 0, "completion": true, "duration": 30 + i % 600,
            "extensions": {
                settings.attempts_extension.as_str(): 1 + i % 3,
                xapi::EXT_CURRICULUM_STANDARD: [{"id": "E4MATA01B01C01", "achievement-level": "B"}],
            },
        },
        "context": {"platform": settings.platform, "extensions": {xapi::EXT_PARTNER_ID: partner_id}},
        "timestamp": format!("{date}T00:00:00.000+09:00"),
    });
    let statement =
        mongodb::bson::to_document(&xapi::encode_keys(statement)).context("statement to BSON")?;
    let now = Bson::DateTime(mongodb::bson::DateTime::now());
    Ok(doc! {
        "_id": id, "base_dt": date.to_string(), "partner_id": partner_id, "user_hash": aidt_batch::runtime::partition::user_hash(&user), "user_id": user, "area": "assessment",
        "statement": statement, "status": aidt_batch::contract::BatchStatus::Ready.as_str(), "created_at": now.clone(), "updated_at": now,
    })
}

/// Reads the date's READY documents with a plain cursor (same filter,
/// projection and batch size as DC-01-001) and prints the rate.
pub async fn scan(app: &AppContext, args: &ScanArgs) -> anyhow::Result<()> {
    let date = date_or_yesterday(args.date);
    if args.source {
        return scan_source(app, date, args.insert).await;
    }
    let coll = app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let started = Instant::now();
    let mut n = 0u64;
    for partner_id in
        aidt_batch::jobs::shared::partners::partners_by_id(&app.settings.keris)?.keys()
    {
        let mut find = coll
            .find(send_statements::ready_filter(
                &date.to_string(),
                partner_id,
                None,
            ))
            .projection(keris_batch_data::stored_projection())
            .batch_size(app.settings.jobs.keris_transfer.read_batch_size);
        if !args.unsorted {
            find = find.sort(send_statements::ready_sort());
        }
        let mut cursor = find.await.context("Failed to read keris_batch_data")?;
        while cursor
            .try_next()
            .await
            .context("Failed to read keris_batch_data")?
            .is_some()
        {
            n += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "scanned {n} READY statements of {date}{} in {secs:.2} s ({:.0}/s)",
        if args.unsorted { ", unsorted" } else { "" },
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// The database work DC-01-001 cannot avoid, without HTTP: reads the date's
/// READY documents as the job does (filter, sort by `_id`, projection, batch
/// size), once each, and marks each `SENT` once by `_id` with a transfer id
/// and its own index, through the job's own `mark_sent`: requests of the
/// job's size, their marks in `update` commands of the job's size, as many
/// requests marked at once as the job allows (`keris.max_concurrency`),
/// while the cursor reads on. Prints the rate.
pub async fn read_and_mark(app: &AppContext, args: &ReadAndMarkArgs) -> anyhow::Result<()> {
    use transfer::{Item, RequestOutcome, Verdict};
    let date = date_or_yesterday(args.date);
    let keris = &app.settings.keris;
    let per_request = args
        .per_request
        .unwrap_or(keris.max_statements_per_request)
        .max(1);
    let in_flight = args.in_flight.unwrap_or(keris.max_concurrency).max(1);
    let per_command = args
        .marks_per_command
        .unwrap_or(app.settings.jobs.keris_transfer.sent_marks_per_command);
    let coll = app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let started = Instant::now();
    let (mut read, mut marked) = (0u64, 0u64);
    for partner_id in aidt_batch::jobs::shared::partners::partners_by_id(keris)?.keys() {
        let mut cursor = coll
            .find(send_statements::ready_filter(
                &date.to_string(),
                partner_id,
                None,
            ))
            .sort(send_statements::ready_sort())
            .projection(keris_batch_data::stored_projection())
            .batch_size(app.settings.jobs.keris_transfer.read_batch_size)
            .await
            .context("Failed to read keris_batch_data")?;
        let transfer_id = uuid::Uuid::new_v4().to_string();
        // Spawned, not merely pushed into a FuturesUnordered: a mark future
        // polled once holds a pooled connection, and while this loop awaits
        // the cursor nothing would poll it again; with the pool exhausted by
        // such marks the cursor's getMore waits forever.
        let mut marking = futures::stream::FuturesUnordered::new();
        let mut items = Vec::with_capacity(per_request);
        let mut next_index = 1u64;
        loop {
            let doc = cursor
                .try_next()
                .await
                .context("Failed to read keris_batch_data")?;
            if let Some(doc) = &doc {
                read += 1;
                items.push(Item {
                    id: doc.get_str("_id").unwrap_or_default().to_string(),
                    user_id: String::new(),
                    partner_id: String::new(),
                    base_dt: date,
                    bytes: Vec::new(),
                });
            }
            if items.len() >= per_request || (doc.is_none() && !items.is_empty()) {
                let outcome = RequestOutcome {
                    transfer_id: Some(transfer_id.clone()),
                    chunked_index: next_index,
                    journal_id: None,
                    verdicts: vec![Verdict::Accepted; items.len()],
                    items: std::mem::replace(&mut items, Vec::with_capacity(per_request)),
                };
                next_index += outcome.items.len() as u64;
                if marking.len() >= in_flight {
                    marked += marking.next().await.expect("not empty")??;
                }
                let db = app.mongo.clone();
                marking.push(tokio::spawn(async move {
                    keris_batch_data::mark_sent(
                        &db,
                        &outcome,
                        per_command,
                        keris_batch_data::Marks::JustRead,
                    )
                    .await
                }));
            }
            if doc.is_none() {
                break;
            }
        }
        while let Some(n) = marking.next().await {
            marked += n??;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "read and marked {marked}/{read} READY statements of {date} by _id in {secs:.2} s ({:.0}/s; {per_request} per request, {per_command} marks per command, {in_flight} requests at once)",
        read as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Reads the date's non-voided source statements with LRS-01-001's filter,
/// sort and batch size (and, with `insert`, writes one document per group:
/// see [`ScanArgs::insert`]), and prints the rate.
async fn scan_source(app: &AppContext, date: NaiveDate, insert: bool) -> anyhow::Result<()> {
    if insert {
        return read_and_insert(app, date).await;
    }
    let started = Instant::now();
    let mut cursor = source_cursor(app, date).await?;
    let mut n = 0u64;
    while cursor
        .try_next()
        .await
        .context("Failed to read the statements")?
        .is_some()
    {
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "scanned {n} source statements of {date} in {secs:.2} s ({:.0}/s)",
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// The date's non-voided source statements with LRS-01-001's filter, sort
/// and batch size, raw as the job reads them.
async fn source_cursor(
    app: &AppContext,
    date: NaiveDate,
) -> anyhow::Result<mongodb::Cursor<RawDocumentBuf>> {
    use aidt_batch::jobs::lrs::aggregation::{source_filter, source_sort};
    app.mongo
        .collection::<RawDocumentBuf>(aidt_batch::contract::STATEMENTS)
        .find(source_filter(date))
        .sort(source_sort())
        .allow_disk_use(true)
        .batch_size(app.settings.jobs.lrs_aggregate.batch_size)
        .await
        .context("Failed to read the statements")
}

/// The collection [`read_and_insert`] writes (and drops).
const READ_AND_INSERT_TARGET: &str = "bench_read_and_insert";

/// `scan --source --insert`: see [`ScanArgs::insert`].
async fn read_and_insert(app: &AppContext, date: NaiveDate) -> anyhow::Result<()> {
    let settings = &app.settings.jobs.lrs_aggregate;
    let target = app
        .mongo
        .collection::<RawDocumentBuf>(READ_AND_INSERT_TARGET);
    target
        .drop()
        .await
        .context("Failed to drop the benchmark's collection")?;
    // keris_batch_data's indexes: inserting pays for each.
    let indexes = aidt_batch::commands::migrate::keris_batch_data_indexes();
    aidt_batch::context::ensure_indexes(&app.mongo, READ_AND_INSERT_TARGET, &indexes).await?;
    let started = Instant::now();
    let mut cursor = source_cursor(app, date).await?;
    // As many batches in flight as the job writes at once, each a task.
    let in_flight = settings.writes_in_flight.max(1) as usize;
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Vec<RawDocumentBuf>>(in_flight);
    let writing = async {
        let mut written = 0u64;
        let insert = |batch: Vec<RawDocumentBuf>| {
            let target = target.clone();
            async move {
                let n = batch.len() as u64;
                target
                    .insert_many(batch)
                    .ordered(false)
                    .await
                    .context("Failed to insert into keris_batch_data")?;
                anyhow::Ok(n)
            }
        };
        run_in_flight(batch_rx, in_flight, insert, |n| {
            written += n;
            Ok(())
        })
        .await?;
        anyhow::Ok(written)
    };
    let reading = async {
        let (mut read, mut user) = (0u64, String::new());
        // The current student's groups: (verb id, object id) → document.
        let mut groups: std::collections::HashMap<(String, String), RawDocumentBuf> =
            Default::default();
        let mut batch = Vec::new();
        let now = mongodb::bson::DateTime::now();
        loop {
            let source = cursor
                .try_next()
                .await
                .context("Failed to read the statements")?;
            let next_user = source
                .as_ref()
                .map(|d| d.get_str("user_id").unwrap_or_default().to_string());
            if next_user.as_ref() != Some(&user) {
                batch.extend(groups.drain().map(|(_, d)| d));
                if batch.len() >= settings.batch_size as usize || source.is_none() {
                    let full = std::mem::take(&mut batch);
                    if !full.is_empty() && batch_tx.send(full).await.is_err() {
                        break;
                    }
                }
            }
            let (Some(source), Some(next_user)) = (source, next_user) else {
                break;
            };
            read += 1;
            user = next_user;
            let statement = source.get_document("statement").ok();
            let field = |path: &str| {
                statement
                    .and_then(|s| s.get_document(path).ok())
                    .and_then(|d| d.get_str("id").ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let (verb, object) = (field("verb"), field("object"));
            let id = xapi::statement_id(&settings.id_namespace, date, &user, &verb, &object);
            let mut doc = RawDocumentBuf::new();
            doc.append("_id", id.to_string());
            doc.append("base_dt", date.to_string());
            let partner_id = source.get_str("partner_id").unwrap_or_default();
            doc.append("partner_id", partner_id.to_string());
            doc.append("user_id", user.clone());
            let hash = aidt_batch::runtime::partition::user_hash(&user);
            doc.append("user_hash", hash);
            doc.append("area", "assessment");
            if let Some(statement) = statement {
                doc.append("statement", statement.to_raw_document_buf());
            }
            doc.append("status", aidt_batch::contract::BatchStatus::Ready.as_str());
            doc.append("created_at", now);
            doc.append("updated_at", now);
            groups.insert((verb, object), doc);
        }
        drop(batch_tx);
        anyhow::Ok(read)
    };
    let (read, written) = tokio::try_join!(reading, writing)?;
    let secs = started.elapsed().as_secs_f64();
    target
        .drop()
        .await
        .context("Failed to drop the benchmark's collection")?;
    println!(
        "read {read} source statements of {date} and inserted {written} documents in {secs:.2} s ({:.0}/s)",
        read as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Drops the configuration's MongoDB database: benchmarks leave nothing of
/// their data behind (a 1M-statement day is several GB on FerretDB).
pub async fn drop_database(app: &AppContext) -> anyhow::Result<()> {
    let name = app.mongo.name().to_string();
    app.mongo
        .drop()
        .await
        .with_context(|| format!("Failed to drop the MongoDB database {name}"))?;
    println!("dropped the MongoDB database {name}");
    Ok(())
}
