-- LRS-01-001's watermark on the LRS's `stored` clock: every statement the
-- LRS stored up to `stored_until` has been aggregated (or counted as too
-- late, undecodable or withheld). The next run takes the statements stored
-- after it as late ones. One per partition: '' for an unpartitioned run,
-- else 'I/N'. Moved only once a run has written everything it covers, so a
-- run killed before that leaves the previous value and its rerun covers the
-- same statements again (the documents record which statements they cover).
CREATE TABLE batch_lrs_watermark (
    part          text        PRIMARY KEY,
    stored_until  timestamptz NOT NULL,
    run_id        bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
