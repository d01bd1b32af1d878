-- Audit of LMS-01-007 and DC-01-003 (deletion of the personal data of
-- students without PRVC_PROVIDE consent): one row per run, updated in the
-- same transaction as each batch's PostgreSQL deletions, so a killed run's
-- row shows exactly what it committed. Students appear only as salted
-- SHA-256 hashes (hex), never as ids, names or e-mails.
CREATE TABLE batch_privacy_audit (
    run_id         bigint      PRIMARY KEY REFERENCES batch_job_run (run_id),
    job_id         text        NOT NULL,
    business_date  date        NOT NULL,
    dry_run        boolean     NOT NULL,
    reference_time timestamptz NOT NULL,
    grace_days     integer     NOT NULL,
    -- Rows / documents deleted (or, for a dry run, that would be) per table
    -- or collection; `tb_lms_user` counts students whose row was cleared.
    counts         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Hashes of the students this run changed anything for.
    student_hashes text[]      NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_privacy_audit_job_idx ON batch_privacy_audit (job_id, business_date);
