//! `aidt-batch migrate`: the batch's own PostgreSQL tables and the indexes of
//! the MongoDB collection it owns. Safe in every profile and idempotent.

use anyhow::Context as _;
use mongodb::bson::doc;

use crate::context::AppContext;
use crate::runtime::Exit;

/// The batch's migrations, embedded at build time. The data-contract tables
/// live in `migrations/contract/` and are not part of this set.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Indexes the batch needs on tables the LMS owns (`migrations/lms/`),
/// applied only where those tables are in the batch's database. Both sets
/// share `_sqlx_migrations`, so each runs ignoring the other's versions.
pub static LMS_INDEX_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/lms");

use crate::contract::KERIS_BATCH_DATA;

/// The command: connects with `profile`'s configuration and migrates.
pub async fn exec(
    profile: crate::config::Profile,
    extra: Option<&std::path::Path>,
) -> anyhow::Result<Exit> {
    let loaded = super::load_config(profile, extra, None)?;
    let app = AppContext::connect(&loaded).await?;
    let exit = run(&app).await;
    app.close().await;
    exit
}

pub async fn run(app: &AppContext) -> anyhow::Result<Exit> {
    apply(app).await?;
    for line in crate::jobs::shared::sessions::ensure_contract_indexes(&app.pg).await? {
        println!("PostgreSQL: index {line}");
    }
    println!(
        "PostgreSQL: batch migrations applied ({} known)",
        MIGRATOR.iter().count()
    );
    println!("MongoDB: indexes of {KERIS_BATCH_DATA} ensured");
    Ok(Exit::Success)
}

/// Applies the migrations and ensures the indexes.
pub async fn apply(app: &AppContext) -> anyhow::Result<()> {
    let mut batch = sqlx::migrate!("./migrations");
    batch.set_ignore_missing(true);
    batch
        .run(&app.pg)
        .await
        .context("Failed to apply the batch migrations")?;
    let lms_tables: bool =
        sqlx::query_scalar("SELECT to_regclass('tb_lms_login_hist') IS NOT NULL")
            .fetch_one(&app.pg)
            .await
            .context("Failed to look for tb_lms_login_hist")?;
    if lms_tables {
        let mut lms = sqlx::migrate!("./migrations/lms");
        lms.set_ignore_missing(true);
        lms.run(&app.pg)
            .await
            .context("Failed to add the batch's indexes to the LMS tables (migrations/lms)")?;
    }
    ensure_mongo_indexes(&app.mongo).await
}

/// The batch's indexes on `keris_batch_data` (also for whoever drops the
/// collection, e.g. `dev seed --reset`), and none it no longer reads by:
/// every index costs each insert (LRS-01-001) and each status change
/// (DC-01-001's SENT marks) a write of its own.
pub async fn ensure_mongo_indexes(db: &mongodb::Database) -> anyhow::Result<()> {
    crate::context::ensure_indexes(db, KERIS_BATCH_DATA, &keris_batch_data_indexes()).await?;
    crate::context::drop_indexes(db, KERIS_BATCH_DATA, &obsolete_keris_batch_data_indexes()).await
}

/// The keys of the batch's indexes on `keris_batch_data`.
pub fn keris_batch_data_indexes() -> [mongodb::bson::Document; 2] {
    [
        // DC-01-001 streams one partner's READY statements of a day in
        // (user_hash, _id) order; a partition a range of user_hash.
        doc! { "base_dt": 1, "partner_id": 1, "status": 1, "user_hash": 1, "_id": 1 },
        // DC-01-003 deletes one student's documents.
        doc! { "user_id": 1 },
    ]
}

/// Indexes earlier versions created on `keris_batch_data` and `migrate`
/// drops: `(base_dt, partner_id, status, _id)` served DC-01-001's unpartitioned
/// read in `_id` order, which now reads in `(user_hash, _id)` order like a
/// partition (and documents without `user_hash` come first there).
pub fn obsolete_keris_batch_data_indexes() -> [mongodb::bson::Document; 1] {
    [doc! { "base_dt": 1, "partner_id": 1, "status": 1, "_id": 1 }]
}
