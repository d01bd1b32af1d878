-- LMS-01-007 and DC-01-003 sweep, each run, the stores for rows and
-- documents written for students already recorded complete (an offline
-- sync, a stale session, a late statement). Per table or collection, how
-- many of the run's `counts` the sweep found; the students are among
-- `student_hashes` like any other.
ALTER TABLE batch_privacy_audit
    ADD COLUMN swept_counts jsonb NOT NULL DEFAULT '{}'::jsonb;
