-- DC-01-001's journal of API-007 requests whose outcome is not yet recorded.
-- A row is written before a request goes out and deleted once KERIS's answer
-- is applied to keris_batch_data / tb_dc_error_data_info. Rows left behind by
-- a killed run are the requests in doubt: the rerun asks KERIS for the
-- transfer's status and sends them again on that transfer at their own
-- indexes (KERIS drops a statement it already holds with the same content).
CREATE TABLE batch_keris_request (
    request_id    bigserial   PRIMARY KEY,
    job_id        text        NOT NULL,
    base_dt       date        NOT NULL,
    partner_name  text        NOT NULL,
    transfer_id   text        NOT NULL,
    chunked_index bigint      NOT NULL,
    -- In request order: statement i has index chunked_index + i.
    statement_ids text[]      NOT NULL,
    run_id        bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_keris_request_job_idx ON batch_keris_request (job_id, base_dt, partner_name);
