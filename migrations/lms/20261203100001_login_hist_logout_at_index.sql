-- no-transaction
-- BO-01-003 counts the sessions that began before its day and ended in it
-- (or after it): sessions crossing midnight. tb_lms_login_hist has no index
-- on logout_at in the contract; without one that part of its read would scan
-- the whole login history. Added here like the login_at index beside it (see
-- that file for why CONCURRENTLY, the directive above and one statement).
CREATE INDEX CONCURRENTLY IF NOT EXISTS tb_lms_login_hist_logout_idx ON tb_lms_login_hist (logout_at);
