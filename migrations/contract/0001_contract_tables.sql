-- The data-contract tables (../shared/spec/data-contract.md).
--
-- In production these tables belong to the LMS, BO and LCMS applications; this
-- file creates them only for development and tests (`aidt-batch dev schema`,
-- which refuses the `prod` profile). It is deliberately NOT an sqlx migration:
-- `aidt-batch migrate` must never create or alter another system's tables.
-- Every statement is idempotent so the file can be applied again at any time.

-- Reference data (LMS) -------------------------------------------------------
CREATE TABLE IF NOT EXISTS tb_lms_school (
    school_id    text PRIMARY KEY,
    school_nm    text NOT NULL,
    school_level text NOT NULL CHECK (school_level IN ('E', 'M', 'H'))
);

CREATE TABLE IF NOT EXISTS tb_lms_user (
    user_id    uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    user_type  text NOT NULL CHECK (user_type IN ('S', 'T', 'P')),
    school_id  text,
    grade      smallint,
    class_no   smallint,
    user_nm    text,
    email      text,
    reg_dt     timestamptz NOT NULL DEFAULT now(),
    del_yn     text NOT NULL DEFAULT 'N' CHECK (del_yn IN ('N', 'Y'))
);

CREATE TABLE IF NOT EXISTS tb_lms_user_consent (
    user_id      uuid NOT NULL,
    consent_type text NOT NULL,
    agree_yn     text NOT NULL CHECK (agree_yn IN ('Y', 'N')),
    agree_dt     timestamptz,
    withdraw_dt  timestamptz,
    PRIMARY KEY (user_id, consent_type)
);

CREATE TABLE IF NOT EXISTS tb_lms_keris_token (
    user_id   uuid PRIMARY KEY,
    token     text NOT NULL,
    access_id text NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tb_lms_course (
    course_id    text PRIMARY KEY,
    textbook_id  text NOT NULL,
    subject_cd   text NOT NULL,
    school_level text NOT NULL,
    course_nm    text NOT NULL
);

CREATE TABLE IF NOT EXISTS tb_lms_lecture (
    lecture_code text PRIMARY KEY,
    course_id    text NOT NULL,
    school_id    text NOT NULL,
    teacher_id   uuid,
    lecture_nm   text NOT NULL
);

CREATE TABLE IF NOT EXISTS tb_lms_lecture_member (
    lecture_code text NOT NULL,
    user_id      uuid NOT NULL,
    PRIMARY KEY (lecture_code, user_id)
);
CREATE INDEX IF NOT EXISTS tb_lms_lecture_member_user_idx ON tb_lms_lecture_member (user_id);

CREATE TABLE IF NOT EXISTS tb_lms_std_sys (
    std_sys_id   text PRIMARY KEY,
    achv_std_cd  text NOT NULL,
    subject_cd   text NOT NULL,
    school_level text NOT NULL,
    std_sys_nm   text NOT NULL
);

-- Content: LCMS is the source, LMS holds the copy ----------------------------
CREATE TABLE IF NOT EXISTS tb_lcms_content (
    content_id   text PRIMARY KEY,
    course_id    text NOT NULL,
    content_type text NOT NULL,
    title        text NOT NULL,
    use_yn       text NOT NULL DEFAULT 'Y',
    mod_dt       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tb_lcms_item (
    item_id     text PRIMARY KEY,
    content_id  text NOT NULL,
    item_type   text NOT NULL CHECK (item_type IN ('M', 'S', 'L', 'E')),
    difficulty  smallint NOT NULL CHECK (difficulty BETWEEN 1 AND 5),
    std_sys_ids text[] NOT NULL DEFAULT '{}',
    kc_ids      text[] NOT NULL DEFAULT '{}',
    use_yn      text NOT NULL DEFAULT 'Y',
    mod_dt      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tb_lms_content (
    content_id   text PRIMARY KEY,
    course_id    text NOT NULL,
    content_type text NOT NULL,
    title        text NOT NULL,
    use_yn       text NOT NULL DEFAULT 'Y',
    mod_dt       timestamptz NOT NULL,
    sync_dt      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tb_lms_item (
    item_id     text PRIMARY KEY,
    content_id  text NOT NULL,
    item_type   text NOT NULL,
    difficulty  smallint NOT NULL,
    std_sys_ids text[] NOT NULL DEFAULT '{}',
    kc_ids      text[] NOT NULL DEFAULT '{}',
    use_yn      text NOT NULL DEFAULT 'Y',
    mod_dt      timestamptz NOT NULL,
    sync_dt     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tb_lms_kc_std_map (
    kc_id      text NOT NULL,
    std_sys_id text NOT NULL,
    item_cnt   integer NOT NULL DEFAULT 0,
    upd_dt     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kc_id, std_sys_id)
);

CREATE TABLE IF NOT EXISTS tb_lms_course_std_sys (
    course_id  text NOT NULL,
    std_sys_id text NOT NULL,
    item_cnt   integer NOT NULL DEFAULT 0,
    upd_dt     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (course_id, std_sys_id)
);

-- Learning activity (LMS) ----------------------------------------------------
CREATE TABLE IF NOT EXISTS tb_lms_lrn_result (
    result_id    bigserial PRIMARY KEY,
    user_id      uuid NOT NULL,
    lecture_code text NOT NULL,
    item_id      text NOT NULL,
    content_id   text NOT NULL,
    std_sys_id   text NOT NULL,
    correct_yn   text NOT NULL CHECK (correct_yn IN ('Y', 'N')),
    score        numeric(5, 2) NOT NULL CHECK (score BETWEEN 0 AND 100),
    duration_sec integer NOT NULL DEFAULT 0,
    solved_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS tb_lms_lrn_result_user_idx ON tb_lms_lrn_result (user_id, std_sys_id);
CREATE INDEX IF NOT EXISTS tb_lms_lrn_result_solved_idx ON tb_lms_lrn_result (solved_at);

CREATE TABLE IF NOT EXISTS tb_lms_lrn_session (
    session_id         bigserial PRIMARY KEY,
    user_id            uuid NOT NULL,
    lecture_code       text NOT NULL,
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz,
    keris_init_sent_at timestamptz,
    keris_term_sent_at timestamptz
);
CREATE INDEX IF NOT EXISTS tb_lms_lrn_session_user_idx ON tb_lms_lrn_session (user_id);

CREATE TABLE IF NOT EXISTS tb_lms_lrn_progress (
    user_id       uuid NOT NULL,
    std_sys_id    text NOT NULL,
    progress_rate numeric(5, 2) NOT NULL DEFAULT 0,
    completed_at  timestamptz,
    upd_dt        timestamptz NOT NULL DEFAULT now(),
    keris_sent_at timestamptz,
    PRIMARY KEY (user_id, std_sys_id)
);

CREATE TABLE IF NOT EXISTS tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys (
    user_id           uuid NOT NULL,
    std_sys_id        text NOT NULL,
    lecture_code      text,
    teacher_id        uuid,
    score             numeric(5, 2),
    achievement_level text CHECK (achievement_level IN ('A', 'B', 'C', 'D', 'E')),
    progress_rate     numeric(5, 2),
    completed_yn      text NOT NULL DEFAULT 'N',
    upd_dt            timestamptz NOT NULL DEFAULT now(),
    keris_sent_at     timestamptz,
    PRIMARY KEY (user_id, std_sys_id)
);

CREATE TABLE IF NOT EXISTS tb_lms_assignment (
    asgn_id      bigserial PRIMARY KEY,
    lecture_code text NOT NULL,
    teacher_id   uuid,
    title        text NOT NULL,
    -- The contract names no constraint, and the LMS's column allows NULL
    -- (LMS-01-004 skips and reports such assignments).
    due_dt       timestamptz,
    status       text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED'))
);
-- Databases created before due_dt was nullable here.
ALTER TABLE tb_lms_assignment ALTER COLUMN due_dt DROP NOT NULL;

CREATE TABLE IF NOT EXISTS tb_lms_assignment_submit (
    asgn_id   bigint NOT NULL,
    user_id   uuid NOT NULL,
    submit_dt timestamptz,
    PRIMARY KEY (asgn_id, user_id)
);
CREATE INDEX IF NOT EXISTS tb_lms_assignment_submit_user_idx ON tb_lms_assignment_submit (user_id);

CREATE TABLE IF NOT EXISTS tb_lms_ntcn_msg (
    msg_id     bigserial PRIMARY KEY,
    user_id    uuid NOT NULL,
    msg_type   text NOT NULL CHECK (msg_type IN ('ASGN_DUE', 'PRAISE')),
    ref_key    text NOT NULL,
    title      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_yn    text NOT NULL DEFAULT 'N',
    UNIQUE (user_id, msg_type, ref_key)
);

CREATE TABLE IF NOT EXISTS tb_lms_stdnt_cmpt_idx_daily (
    base_dt          date NOT NULL,
    user_id          uuid NOT NULL,
    lrn_time_sec     integer NOT NULL DEFAULT 0,
    solved_cnt       integer NOT NULL DEFAULT 0,
    correct_rate     numeric(5, 2),
    asgn_submit_rate numeric(5, 2),
    attend_yn        text NOT NULL DEFAULT 'N',
    PRIMARY KEY (base_dt, user_id)
);
CREATE INDEX IF NOT EXISTS tb_lms_stdnt_cmpt_idx_daily_user_idx ON tb_lms_stdnt_cmpt_idx_daily (user_id);

CREATE TABLE IF NOT EXISTS tb_lms_stdnt_lrn_stats_daily (
    base_dt      date NOT NULL,
    user_id      uuid NOT NULL,
    lecture_code text NOT NULL,
    std_sys_cnt  integer NOT NULL DEFAULT 0,
    item_cnt     integer NOT NULL DEFAULT 0,
    correct_cnt  integer NOT NULL DEFAULT 0,
    avg_score    numeric(5, 2),
    lrn_time_sec integer NOT NULL DEFAULT 0,
    PRIMARY KEY (base_dt, user_id, lecture_code)
);
CREATE INDEX IF NOT EXISTS tb_lms_stdnt_lrn_stats_daily_user_idx ON tb_lms_stdnt_lrn_stats_daily (user_id);

-- Logs (LMS) ------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS tb_lms_access_log (
    log_id      bigserial PRIMARY KEY,
    user_id     uuid,
    url         text NOT NULL,
    ip          text,
    accessed_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS tb_lms_access_log_accessed_idx ON tb_lms_access_log (accessed_at);
CREATE INDEX IF NOT EXISTS tb_lms_access_log_user_idx ON tb_lms_access_log (user_id);

CREATE TABLE IF NOT EXISTS tb_lms_api_log (
    log_id     bigserial PRIMARY KEY,
    endpoint   text NOT NULL,
    status     integer NOT NULL,
    elapsed_ms integer NOT NULL,
    logged_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS tb_lms_api_log_logged_idx ON tb_lms_api_log (logged_at);

CREATE TABLE IF NOT EXISTS tb_lms_login_hist (
    hist_id   bigserial PRIMARY KEY,
    user_id   uuid NOT NULL,
    user_type text NOT NULL,
    login_at  timestamptz NOT NULL,
    logout_at timestamptz,
    ip        text
);
CREATE INDEX IF NOT EXISTS tb_lms_login_hist_login_idx ON tb_lms_login_hist (login_at);
CREATE INDEX IF NOT EXISTS tb_lms_login_hist_user_idx ON tb_lms_login_hist (user_id);

-- Back office (BO) ------------------------------------------------------------
CREATE TABLE IF NOT EXISTS tb_bo_admin_user (
    admin_id      bigserial PRIMARY KEY,
    login_id      text NOT NULL UNIQUE,
    admin_nm      text NOT NULL,
    approved_at   timestamptz,
    last_login_at timestamptz,
    status        text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'DORMANT', 'LOCKED')),
    status_chg_dt timestamptz
);

CREATE TABLE IF NOT EXISTS tb_bo_pm_schedule (
    pm_id      bigserial PRIMARY KEY,
    target_sys text NOT NULL,
    start_dt   timestamptz NOT NULL,
    end_dt     timestamptz NOT NULL,
    notice_msg text,
    status     text NOT NULL DEFAULT 'SCHEDULED'
               CHECK (status IN ('SCHEDULED', 'ACTIVE', 'DONE', 'CANCELLED'))
);

CREATE TABLE IF NOT EXISTS tb_bo_service_status (
    target_sys text PRIMARY KEY,
    maint_yn   text NOT NULL DEFAULT 'N' CHECK (maint_yn IN ('Y', 'N')),
    maint_msg  text,
    upd_dt     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tb_bo_notice (
    notice_id     bigserial PRIMARY KEY,
    title         text NOT NULL,
    disp_yn       text NOT NULL DEFAULT 'Y' CHECK (disp_yn IN ('Y', 'N')),
    disp_start_dt timestamptz,
    disp_end_dt   timestamptz
);

CREATE TABLE IF NOT EXISTS tb_bo_lms_conn_stats_daily (
    base_dt       date NOT NULL,
    hour          smallint NOT NULL,
    school_level  text NOT NULL,
    conn_user_cnt integer NOT NULL DEFAULT 0,
    PRIMARY KEY (base_dt, hour, school_level)
);

CREATE TABLE IF NOT EXISTS tb_bo_lms_login_stats_daily (
    base_dt        date NOT NULL,
    user_type      text NOT NULL,
    school_level   text NOT NULL,
    login_cnt      integer NOT NULL DEFAULT 0,
    login_user_cnt integer NOT NULL DEFAULT 0,
    PRIMARY KEY (base_dt, user_type, school_level)
);

CREATE TABLE IF NOT EXISTS tb_bo_lms_login_user_stats (
    period_type    text NOT NULL CHECK (period_type IN ('D', 'W', 'M')),
    period_start   date NOT NULL,
    user_type      text NOT NULL,
    school_level   text NOT NULL,
    login_user_cnt integer NOT NULL DEFAULT 0,
    PRIMARY KEY (period_type, period_start, user_type, school_level)
);

CREATE TABLE IF NOT EXISTS tb_bo_mail_recipient (
    email     text PRIMARY KEY,
    rcpt_nm   text NOT NULL,
    active_yn text NOT NULL DEFAULT 'Y'
);

CREATE TABLE IF NOT EXISTS tb_bo_mail_send_hist (
    send_id    bigserial PRIMARY KEY,
    week_start date NOT NULL,
    email      text NOT NULL,
    sent_at    timestamptz,
    status     text NOT NULL,
    err_msg    text,
    UNIQUE (week_start, email)
);

-- Data controller (DC) --------------------------------------------------------
CREATE TABLE IF NOT EXISTS tb_dc_error_data_info (
    err_id       bigserial PRIMARY KEY,
    job_id       text NOT NULL,
    base_dt      date NOT NULL,
    partner_id   uuid NOT NULL,
    user_id      uuid,
    transfer_id  text,
    stmt_index   bigint,
    statement_id uuid NOT NULL,
    err_code     text NOT NULL,
    err_msg      text,
    status       text NOT NULL DEFAULT 'PENDING'
                 CHECK (status IN ('PENDING', 'REGENERATED', 'RESENT', 'FAILED')),
    retry_cnt    integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    upd_dt       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tb_dc_error_data_info_status_idx ON tb_dc_error_data_info (status, base_dt);
CREATE INDEX IF NOT EXISTS tb_dc_error_data_info_user_idx ON tb_dc_error_data_info (user_id);
CREATE INDEX IF NOT EXISTS tb_dc_error_data_info_stmt_idx ON tb_dc_error_data_info (statement_id);
