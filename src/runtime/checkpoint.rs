//! Checkpoints: one JSON value per (job, business date, partition) where a
//! long job records how far it got, so that a rerun after a stop or a crash
//! resumes instead of starting over. A completed run deletes its checkpoint.
//! Each partition (`--partition I/N`) has its own: a partition's rerun
//! resumes its own work only.

use chrono::NaiveDate;
use serde::{de::DeserializeOwned, Serialize};
use sqlx::PgPool;

use super::job::CountsSnapshot;
use super::partition::Partition;

/// Checkpoint access for one run.
pub struct Checkpoints {
    pg: PgPool,
    job_id: &'static str,
    business_date: NaiveDate,
    /// `''` unpartitioned, else `I/N`.
    part: String,
    run_id: i64,
}

impl Checkpoints {
    pub fn new(
        pg: PgPool,
        job_id: &'static str,
        business_date: NaiveDate,
        partition: Option<Partition>,
        run_id: i64,
    ) -> Self {
        Self {
            pg,
            job_id,
            business_date,
            part: partition.map(|p| p.label()).unwrap_or_default(),
            run_id,
        }
    }

    /// The saved value, if an earlier run left one.
    pub async fn load<T: DeserializeOwned>(&self) -> anyhow::Result<Option<T>> {
        let row: Option<(serde_json::Value,)> = sqlx::query_as(
            "SELECT data FROM batch_checkpoint WHERE job_id = $1 AND business_date = $2 AND part = $3",
        )
        .bind(self.job_id)
        .bind(self.business_date)
        .bind(&self.part)
        .fetch_optional(&self.pg)
        .await?;
        match row {
            None => Ok(None),
            Some((data,)) => Ok(Some(serde_json::from_value(data).map_err(|e| {
                anyhow::anyhow!(
                    "checkpoint of {} for {} is unreadable: {e}",
                    self.job_id,
                    self.business_date
                )
            })?)),
        }
    }

    /// Saves `value` and the run's counts so far in one transaction.
    pub async fn save<T: Serialize>(
        &self,
        value: &T,
        counts: CountsSnapshot,
    ) -> anyhow::Result<()> {
        let data = serde_json::to_value(value)?;
        let mut tx = self.pg.begin().await?;
        sqlx::query(
            "INSERT INTO batch_checkpoint (job_id, business_date, run_id, data, updated_at, part)
             VALUES ($1, $2, $3, $4, now(), $5)
             ON CONFLICT (job_id, business_date, part)
             DO UPDATE SET run_id = EXCLUDED.run_id, data = EXCLUDED.data, updated_at = now()",
        )
        .bind(self.job_id)
        .bind(self.business_date)
        .bind(self.run_id)
        .bind(data)
        .bind(&self.part)
        .execute(&mut *tx)
        .await?;
        super::history::update_counts(&mut *tx, self.run_id, counts).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the checkpoint (after a completed run).
    pub async fn clear(&self) -> anyhow::Result<()> {
        sqlx::query(
            "DELETE FROM batch_checkpoint WHERE job_id = $1 AND business_date = $2 AND part = $3",
        )
        .bind(self.job_id)
        .bind(self.business_date)
        .bind(&self.part)
        .execute(&self.pg)
        .await?;
        Ok(())
    }
}
