-- LMS-01-007 and DC-01-003: students whose deletion is complete in every
-- store that job deletes from, so later runs of the job no longer probe
-- them (without this the set only grows: it ignores del_yn so that the run
-- after a killed one finishes what is left). A row is written in the same
-- PostgreSQL transaction as the batch's last deletions, so a run killed
-- before that commit leaves the student to the next run.
--
-- The key is the audit's salted hash (SHA-256 of jobs.privacy.audit_salt
-- and the lower-case hyphenated id, hex), never the id: this table outlives
-- the deletion. The set query computes the same hash in SQL to leave these
-- students out. A new salt makes every hash miss, so each student is probed
-- once more and recorded again under it.
CREATE TABLE batch_privacy_completed (
    job_id       text        NOT NULL,
    student_hash text        NOT NULL,
    -- The start of the grace period the deletion followed (withdraw_dt, or
    -- reg_dt / agree_dt). A student who consents again and later withdraws
    -- has a new one, is in the set again and is deleted again.
    grace_anchor timestamptz NOT NULL,
    run_id       bigint      NOT NULL REFERENCES batch_job_run (run_id),
    completed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, student_hash)
);
