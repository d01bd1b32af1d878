-- LMS-01-008's watermark for the incremental refresh of
-- tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys. Written in the same transaction
-- as the refresh it describes, so it moves exactly when that refresh commits
-- (a run killed afterwards, while sending, keeps it; a run killed before
-- leaves the previous one). The next incremental refresh recomputes only
-- the students with a tb_lms_lrn_result row solved at or after
-- `refreshed_at` minus the configured overlap or with a result_id above
-- `max_result_id`, or a tb_lms_lrn_progress row with such an upd_dt.
CREATE TABLE batch_view_watermark (
    job_id          text        PRIMARY KEY,
    -- now() of the refresh's transaction: every row committed before its
    -- snapshot was seen (the snapshot is taken later than this instant).
    refreshed_at    timestamptz NOT NULL,
    -- The highest tb_lms_lrn_result.result_id the refresh could see.
    max_result_id   bigint      NOT NULL,
    -- The last refresh that recomputed every student (`--full`, the first
    -- run, or the periodic full refresh).
    full_refresh_at timestamptz,
    run_id          bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
