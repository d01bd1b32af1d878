-- LCMS-01-001's watermarks: per LCMS source table, the highest mod_dt the
-- last committed copy read (capped at the source's clock, so a row stamped
-- in the future cannot push it past rows still to come). Written in the same
-- transaction as the copied rows, so it moves exactly when they commit. The
-- next run re-reads rows with mod_dt >= max_mod_dt minus
-- [jobs.lcms_copy] overlap_secs: rows sharing the watermark's timestamp and
-- rows committed late with an older mod_dt are read again, and the upsert
-- (changed rows only) makes that harmless.
CREATE TABLE batch_lcms_watermark (
    source_table text        PRIMARY KEY,
    max_mod_dt   timestamptz NOT NULL,
    run_id       bigint      NOT NULL REFERENCES batch_job_run (run_id),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
