//! Reference data of the LMS: schools, users, consents, KERIS tokens,
//! courses, lectures and their members, standard-system ids.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::world::{Consent, World, SUBJECTS};
use super::{col, insert};

pub(super) async fn write(
    conn: &mut PgConnection,
    world: &World,
) -> anyhow::Result<Vec<(String, u64)>> {
    Ok(vec![
        schools(conn, world).await?,
        users(conn, world).await?,
        consents(conn, world).await?,
        tokens(conn, world).await?,
        courses(conn, world).await?,
        lectures(conn, world).await?,
        lecture_members(conn, world).await?,
        std_sys(conn, world).await?,
    ])
}

async fn schools(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_school",
        &world.schools,
        "INSERT INTO tb_lms_school (school_id, school_nm, school_level)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
        |q, rows| {
            q.bind(col(rows, |s| s.id.clone()))
                .bind(col(rows, |s| s.name.clone()))
                .bind(col(rows, |s| s.level.code()))
        },
    )
    .await
}

async fn users(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_user",
        &world.users,
        "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, grade, class_no, user_nm, email, reg_dt, del_yn)
         SELECT u.*, 'N' FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int2[], $6::int2[],
                                     $7::text[], $8::text[], $9::timestamptz[]) AS u",
        |q, rows| {
            q.bind(col(rows, |u| u.id))
                .bind(col(rows, |u| world.partner_of(u)))
                .bind(col(rows, |u| u.kind.code()))
                .bind(col(rows, |u| world.schools[u.school].id.clone()))
                .bind(col(rows, |u| u.grade))
                .bind(col(rows, |u| u.class_no))
                .bind(col(rows, |u| u.name.clone()))
                .bind(col(rows, |u| u.email.clone()))
                .bind(col(rows, |u| u.reg_dt))
        },
    )
    .await
}

/// `PRVC_PROVIDE` rows: agreed, refused, withdrawn; students with
/// `Consent::Missing` get no row, which the privacy job treats like a refusal.
async fn consents(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    type Row = (
        Uuid,
        &'static str,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = world
        .students
        .iter()
        .filter_map(|s| {
            let id = world.users[s.user].id;
            match s.consent {
                Consent::Agreed { agree_dt } => Some((id, "Y", Some(agree_dt), None)),
                Consent::Refused => Some((id, "N", None, None)),
                Consent::Withdrawn {
                    agree_dt,
                    withdraw_dt,
                } => Some((id, "N", Some(agree_dt), Some(withdraw_dt))),
                Consent::Missing => None,
            }
        })
        .collect();
    insert(
        conn,
        "tb_lms_user_consent",
        &rows,
        "INSERT INTO tb_lms_user_consent (user_id, consent_type, agree_yn, agree_dt, withdraw_dt)
         SELECT u, 'PRVC_PROVIDE', y, a, w FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(u, y, a, w)",
        |q, rows| q.bind(col(rows, |r| r.0)).bind(col(rows, |r| r.1)).bind(col(rows, |r| r.2)).bind(col(rows, |r| r.3)),
    )
    .await
}

async fn tokens(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    let rows: Vec<_> = world
        .students
        .iter()
        .filter_map(|s| s.token.as_ref().map(|t| (world.users[s.user].id, t)))
        .collect();
    insert(
        conn,
        "tb_lms_keris_token",
        &rows,
        "INSERT INTO tb_lms_keris_token (user_id, token, access_id, issued_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0))
                .bind(col(rows, |r| r.1.token.clone()))
                .bind(col(rows, |r| r.1.access_id.clone()))
                .bind(col(rows, |r| r.1.issued_at))
        },
    )
    .await
}

async fn courses(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_course",
        &world.courses,
        "INSERT INTO tb_lms_course (course_id, textbook_id, subject_cd, school_level, course_nm)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
        |q, rows| {
            q.bind(col(rows, |c| c.id.clone()))
                .bind(col(rows, |c| c.textbook_id.clone()))
                .bind(col(rows, |c| SUBJECTS[c.subject].code))
                .bind(col(rows, |c| c.level.code()))
                .bind(col(rows, |c| c.name.clone()))
        },
    )
    .await
}

async fn lectures(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_lecture",
        &world.lectures,
        "INSERT INTO tb_lms_lecture (lecture_code, course_id, school_id, teacher_id, lecture_nm)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[])",
        |q, rows| {
            q.bind(col(rows, |l| l.code.clone()))
                .bind(col(rows, |l| world.courses[l.course].id.clone()))
                .bind(col(rows, |l| world.schools[l.school].id.clone()))
                .bind(col(rows, |l| world.users[l.teacher].id))
                .bind(col(rows, |l| l.name.clone()))
        },
    )
    .await
}

async fn lecture_members(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    let rows: Vec<(&str, Uuid)> = world
        .lectures
        .iter()
        .flat_map(|l| {
            l.members
                .iter()
                .map(move |&m| (l.code.as_str(), world.user_of(m).id))
        })
        .collect();
    insert(
        conn,
        "tb_lms_lecture_member",
        &rows,
        "INSERT INTO tb_lms_lecture_member (lecture_code, user_id) SELECT * FROM UNNEST($1::text[], $2::uuid[])",
        |q, rows| q.bind(col(rows, |r| r.0.to_string())).bind(col(rows, |r| r.1)),
    )
    .await
}

async fn std_sys(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_std_sys",
        &world.std_sys,
        "INSERT INTO tb_lms_std_sys (std_sys_id, achv_std_cd, subject_cd, school_level, std_sys_nm)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
        |q, rows| {
            q.bind(col(rows, |s| s.id.clone()))
                .bind(col(rows, |s| s.achv_std_cd.clone()))
                .bind(col(rows, |s| SUBJECTS[s.subject].code))
                .bind(col(rows, |s| s.level.code()))
                .bind(col(rows, |s| s.name.clone()))
        },
    )
    .await
}
