//! Creates, for development and tests, what other systems own in production:
//! the data-contract tables and the indexes of the LRS's `statements`.

use anyhow::Context as _;
use mongodb::bson::doc;

use aidt_batch::context::AppContext;

/// The contract DDL; idempotent (`CREATE … IF NOT EXISTS`).
pub const CONTRACT_SQL: &str =
    include_str!("../../../migrations/contract/0001_contract_tables.sql");

pub use aidt_batch::contract::STATEMENTS;

pub async fn apply(app: &AppContext) -> anyhow::Result<()> {
    apply_postgres(&app.pg).await?;
    apply_mongo(&app.mongo).await?;
    println!("data-contract tables and LRS indexes ensured");
    Ok(())
}

pub async fn apply_postgres(pg: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql(CONTRACT_SQL)
        .execute(pg)
        .await
        .context("Failed to create the data-contract tables")?;
    Ok(())
}

/// The indexes the jobs rely on: by time (daily aggregation), by user
/// (privacy deletion, LRS-01-001's rebuilt student-days), by `stored`
/// (LRS-01-001's late window) and by statement id (what a voiding statement
/// voids). In production the LRS team creates them.
pub async fn apply_mongo(db: &mongodb::Database) -> anyhow::Result<()> {
    let indexes = [
        doc! { "timestamp": 1 },
        doc! { "user_id": 1 },
        doc! { "stored": 1 },
        doc! { "statement.id": 1 },
    ];
    aidt_batch::context::ensure_indexes(db, STATEMENTS, &indexes).await
}
