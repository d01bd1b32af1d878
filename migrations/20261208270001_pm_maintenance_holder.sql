-- BO-01-002: which maintenance window put each system into maintenance
-- (tb_bo_service_status.maint_yn = 'Y'). A window cancelled (status
-- CANCELLED, or DONE by hand) or deleted while ACTIVE leaves no trace in
-- tb_bo_pm_schedule that would make the job look at its system again; this
-- row does: while it names a window that is no longer ACTIVE, the job
-- re-decides the system (another active window keeps it in maintenance,
-- none ends it). A flag an operator set by hand has no row here and is
-- never touched. Written in the job's transaction with the status change.
-- pm_id has no foreign key: the window may be deleted, and
-- tb_bo_pm_schedule belongs to the back office, not to the batch.
CREATE TABLE batch_pm_maintenance (
    target_sys text        PRIMARY KEY,
    pm_id      bigint      NOT NULL,
    since      timestamptz NOT NULL DEFAULT now()
);
