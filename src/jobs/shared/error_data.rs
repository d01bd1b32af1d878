//! `tb_dc_error_data_info`, the statements KERIS rejected or that could not
//! be sent: what the senders record there for DC-01-002 to resend.

use anyhow::Context as _;
use chrono::NaiveDate;
use sqlx::PgPool;

use super::transfer::RequestOutcome;

/// The failed statements of `outcome` as the columns of an `UNNEST`:
/// statement ids, user ids, stmt indexes, codes, messages.
#[derive(Default)]
pub struct FailedColumns {
    pub statement_ids: Vec<uuid::Uuid>,
    pub user_ids: Vec<Option<uuid::Uuid>>,
    pub partner_ids: Vec<Option<uuid::Uuid>>,
    pub base_dts: Vec<NaiveDate>,
    pub indexes: Vec<Option<i64>>,
    pub codes: Vec<String>,
    pub messages: Vec<String>,
}

impl FailedColumns {
    pub fn of(outcome: &RequestOutcome) -> anyhow::Result<Self> {
        let mut c = FailedColumns::default();
        for (n, item, code, message) in outcome.failed() {
            let id = uuid::Uuid::parse_str(&item.id).with_context(|| {
                format!(
                    "keris_batch_data document {} has an _id that is not a UUID",
                    item.id
                )
            })?;
            c.statement_ids.push(id);
            c.user_ids.push(uuid::Uuid::parse_str(&item.user_id).ok());
            c.partner_ids
                .push(uuid::Uuid::parse_str(&item.partner_id).ok());
            c.base_dts.push(item.base_dt);
            c.indexes.push(outcome.index_of(n));
            c.codes.push(code.to_string());
            c.messages.push(message.to_string());
        }
        Ok(c)
    }

    pub fn is_empty(&self) -> bool {
        self.statement_ids.is_empty()
    }
}

/// Records failed statements in `tb_dc_error_data_info` as `PENDING`: a
/// statement that already has an open row (`PENDING` or `REGENERATED`) gets
/// that row updated (code, message, index, `retry_cnt + 1`) instead of a
/// second row. Set-based: one statement for the whole request.
pub async fn record_errors(
    pg: &PgPool,
    job_id: &str,
    transfer_id: Option<&str>,
    failed: &FailedColumns,
) -> anyhow::Result<()> {
    sqlx::query(
        "WITH input AS (
             SELECT * FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::date[], $6::bigint[], $7::text[], $8::text[])
                 AS t(statement_id, user_id, partner_id, base_dt, stmt_index, err_code, err_msg)
         ), open AS (
             UPDATE tb_dc_error_data_info e
                SET err_code = i.err_code, err_msg = i.err_msg, transfer_id = $9, stmt_index = i.stmt_index,
                    status = 'PENDING', retry_cnt = e.retry_cnt + 1, upd_dt = now()
               FROM input i
              WHERE e.statement_id = i.statement_id AND e.status IN ('PENDING', 'REGENERATED')
             RETURNING e.statement_id
         )
         INSERT INTO tb_dc_error_data_info
                (job_id, base_dt, partner_id, user_id, transfer_id, stmt_index, statement_id, err_code, err_msg)
         SELECT $1, i.base_dt, i.partner_id, i.user_id, $9, i.stmt_index, i.statement_id, i.err_code, i.err_msg
           FROM input i
          WHERE i.statement_id NOT IN (SELECT statement_id FROM open)",
    )
    .bind(job_id)
    .bind(&failed.statement_ids)
    .bind(&failed.user_ids)
    .bind(&failed.partner_ids)
    .bind(&failed.base_dts)
    .bind(&failed.indexes)
    .bind(&failed.codes)
    .bind(&failed.messages)
    .bind(transfer_id)
    .execute(pg)
    .await
    .context("Failed to record statement errors in tb_dc_error_data_info")?;
    Ok(())
}
