//! `aidt-dev bench-lcms`: LCMS content for the LCMS-01-001 benchmark
//! (`scripts/bench-lcms`), generated set-based in SQL in the configured
//! database (the benchmark's LCMS database): one content per 20 items, each
//! item with one or two standard-system ids and one to three KC ids.

use std::time::Instant;

use anyhow::Context as _;

use aidt_batch::context::AppContext;

/// `aidt-dev bench-lcms`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchLcmsArgs {
    /// Empty tb_lcms_content / tb_lcms_item and write this many items (and one content per 20)
    #[arg(long, conflicts_with = "change_pct")]
    pub items: Option<u64>,
    /// Change this percentage of the items instead (new difficulty, mod_dt = now())
    #[arg(long)]
    pub change_pct: Option<f64>,
}

pub async fn bench_lcms(app: &AppContext, args: &BenchLcmsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    match (args.items, args.change_pct) {
        (Some(items), None) => {
            let mut tx = app.pg.begin().await?;
            sqlx::query("TRUNCATE tb_lcms_content, tb_lcms_item")
                .execute(&mut *tx)
                .await
                .context("Failed to empty the LCMS tables (run `aidt-dev schema` first)")?;
            let contents = items.div_ceil(20) as i64;
            sqlx::query(
                "INSERT INTO tb_lcms_content (content_id, course_id, content_type, title, use_yn, mod_dt)
                 SELECT 'BC-' || lpad(g::text, 7, '0'), 'BCRS-' || (g % 50), 'LESSON',
                        g || '단원 벤치마크 콘텐츠', CASE WHEN g % 33 = 0 THEN 'N' ELSE 'Y' END,
                        timestamptz '2026-01-01 00:00+09' + make_interval(secs => g)
                   FROM generate_series(1, $1::bigint) g",
            )
            .bind(contents)
            .execute(&mut *tx)
            .await
            .context("Failed to write tb_lcms_content")?;
            sqlx::query(
                "INSERT INTO tb_lcms_item (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt)
                 SELECT 'BI-' || lpad(g::text, 8, '0'), 'BC-' || lpad(((g - 1) / 20 + 1)::text, 7, '0'),
                        (ARRAY['M', 'S', 'L', 'E'])[1 + g % 4], 1 + g % 5,
                        CASE WHEN g % 5 = 0 THEN ARRAY['E4MATA01B01C0' || g % 9, 'E4MATA01B02C0' || g % 7]
                             ELSE ARRAY['E4MATA01B01C0' || g % 9] END,
                        (ARRAY['KC-' || g % 997, 'KC-' || g % 89, 'KC-' || g % 13])[1:1 + g % 3],
                        CASE WHEN g % 31 = 0 THEN 'N' ELSE 'Y' END,
                        timestamptz '2026-01-01 00:00+09' + make_interval(secs => g)
                   FROM generate_series(1, $1::bigint) g",
            )
            .bind(items as i64)
            .execute(&mut *tx)
            .await
            .context("Failed to write tb_lcms_item")?;
            tx.commit().await?;
            sqlx::query("VACUUM ANALYZE tb_lcms_item")
                .execute(&app.pg)
                .await?;
            println!(
                "wrote {items} LCMS items and {contents} contents in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        (None, Some(pct)) => {
            anyhow::ensure!(
                (0.0..=100.0).contains(&pct),
                "--change-pct must be between 0 and 100"
            );
            let changed = sqlx::query(
                "UPDATE tb_lcms_item SET difficulty = 1 + difficulty % 5, mod_dt = now()
                  WHERE item_id IN (SELECT item_id FROM tb_lcms_item TABLESAMPLE BERNOULLI ($1::real) REPEATABLE (42))",
            )
            .bind(pct)
            .execute(&app.pg)
            .await
            .context("Failed to change tb_lcms_item")?
            .rows_affected();
            println!(
                "changed {changed} LCMS items in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        _ => anyhow::bail!("give --items N or --change-pct P"),
    }
    Ok(())
}
