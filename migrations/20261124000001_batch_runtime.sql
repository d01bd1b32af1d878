-- The batch's own tables: execution history and checkpoints.
-- Applied by `aidt-batch migrate` in every profile, prod included.

CREATE TABLE batch_job_run (
    run_id        bigserial PRIMARY KEY,
    job_id        text        NOT NULL,
    business_date date        NOT NULL,
    params        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    dry_run       boolean     NOT NULL DEFAULT false,
    status        text        NOT NULL
                  CHECK (status IN ('STARTED', 'COMPLETED', 'COMPLETED_WITH_ERRORS',
                                    'FAILED', 'STOPPED', 'SKIPPED')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    read_cnt      bigint      NOT NULL DEFAULT 0,
    write_cnt     bigint      NOT NULL DEFAULT 0,
    skip_cnt      bigint      NOT NULL DEFAULT 0,
    fail_cnt      bigint      NOT NULL DEFAULT 0,
    exit_code     integer,
    error_msg     text,
    -- Job-specific figures (counts per table, per partner, ...).
    details       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    version       text        NOT NULL
);
CREATE INDEX batch_job_run_job_idx ON batch_job_run (job_id, started_at DESC);
-- Stale-run detection looks only at runs still marked STARTED.
CREATE INDEX batch_job_run_started_idx ON batch_job_run (job_id) WHERE status = 'STARTED';

-- One checkpoint per job and business date: where a long job resumes after a
-- stop or a crash. Deleted when a run for that date completes.
CREATE TABLE batch_checkpoint (
    job_id        text        NOT NULL,
    business_date date        NOT NULL,
    run_id        bigint      NOT NULL REFERENCES batch_job_run (run_id),
    data          jsonb       NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, business_date)
);
