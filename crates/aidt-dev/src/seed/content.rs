//! Content: the LCMS's contents and items, the LMS's partial copies of them,
//! and the LMS's maps from knowledge components and courses to
//! standard-system ids.
//!
//! Plus a few items with the LCMS data errors LMS-01-003 / LMS-01-010 must
//! skip and report (`data_errors`), in the LCMS and as they are in the LMS
//! copy, so the seeded world exercises those paths too.

use std::collections::BTreeMap;

use anyhow::Context as _;
use sqlx::PgConnection;

use super::world::{Content, Item, World};
use super::{col, insert};

pub(super) async fn write(
    conn: &mut PgConnection,
    world: &World,
) -> anyhow::Result<Vec<(String, u64)>> {
    let lms_contents: Vec<&Content> = world.contents.iter().filter(|c| c.lms.is_some()).collect();
    let lms_items: Vec<&Item> = world.items.iter().filter(|i| i.lms.is_some()).collect();
    Ok(vec![
        lcms_contents(conn, world).await?,
        lcms_items(conn, world).await?,
        lms_contents_copy(conn, world, &lms_contents).await?,
        lms_items_copy(conn, world, &lms_items).await?,
        kc_std_map(conn, world, &lms_items).await?,
        course_std_sys(conn, world, &lms_items).await?,
        data_errors(conn, world, "tb_lcms_item").await?,
        data_errors(conn, world, "tb_lms_item").await?,
    ])
}

/// The planted data errors, `ITM-<course>-ERR-0n` under the first content
/// the LMS serves: 01 a standard-system id of the right shape that
/// `tb_lms_std_sys` does not know (besides a known one), 02 empty `kc_ids`,
/// 03 a NULL element in `std_sys_ids`, 04 a NULL element in `kc_ids`; in
/// `table` (`tb_lcms_item`, or the LMS copy `tb_lms_item`, where they are
/// copied as they are, unchanged since the last copy). Deterministic: no random draw, so the rest of the world is
/// the same with or without them.
async fn data_errors(
    conn: &mut PgConnection,
    world: &World,
    table: &'static str,
) -> anyhow::Result<(String, u64)> {
    let Some(content) = world
        .contents
        .iter()
        .find(|c| c.use_yn && c.lms.is_some_and(|l| l.use_yn) && !c.items.is_empty())
    else {
        return Ok((table.to_string(), 0));
    };
    let first = &world.items[content.items[0]];
    let known = &world.std_sys[first.std_sys[0]];
    // A code of the right shape that the curriculum does not have (as a
    // code retired from it would be).
    let stem = &known.id[..known.id.len() - 2];
    let unknown = (0..100)
        .map(|n| format!("{stem}{:02}", 99 - n))
        .find(|code| world.std_sys.iter().all(|s| &s.id != code))
        .expect("a free code");
    let kc = known.kc_ids[0].clone();
    let prefix = first.id.rsplitn(3, '-').last().expect("ITM-<course>-..");
    let mod_dt = world.last_sync - chrono::Duration::days(30);
    let copy = table == "tb_lms_item";
    let sync = if copy { ", sync_dt" } else { "" };
    let sql = format!(
        "INSERT INTO {table} (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt{sync})
         VALUES ($1 || '-ERR-01', $2, 'M', 2, ARRAY[$3, $4], ARRAY[$5], 'Y', $6{s}),
                ($1 || '-ERR-02', $2, 'M', 2, ARRAY[$3], '{{}}', 'Y', $6{s}),
                ($1 || '-ERR-03', $2, 'M', 2, ARRAY[$3, NULL], ARRAY[$5], 'Y', $6{s}),
                ($1 || '-ERR-04', $2, 'M', 2, ARRAY[$3], ARRAY[$5, NULL], 'Y', $6{s})",
        s = if copy { ", $7" } else { "" }
    );
    let mut query = sqlx::query(&sql)
        .bind(prefix)
        .bind(&content.id)
        .bind(&known.id)
        .bind(&unknown)
        .bind(&kc)
        .bind(mod_dt);
    if copy {
        query = query.bind(world.last_sync);
    }
    let n = query
        .execute(&mut *conn)
        .await
        .with_context(|| format!("Failed to insert the data-error items into {table}"))?
        .rows_affected();
    Ok((table.to_string(), n))
}

fn yn(b: bool) -> &'static str {
    if b {
        "Y"
    } else {
        "N"
    }
}

/// Arrays of arrays cannot be bound as one PostgreSQL array (they would
/// have to be rectangular), so each item's id list travels as one
/// comma-separated string and `string_to_array` splits it again.
fn joined(ids: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    ids.into_iter()
        .map(|s| s.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn std_ids(world: &World, item: &Item) -> String {
    joined(item.std_sys.iter().map(|&s| world.std_sys[s].id.as_str()))
}

async fn lcms_contents(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lcms_content",
        &world.contents,
        "INSERT INTO tb_lcms_content (content_id, course_id, content_type, title, use_yn, mod_dt)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |c| c.id.clone()))
                .bind(col(rows, |c| world.courses[c.course].id.clone()))
                .bind(col(rows, |c| c.kind.code()))
                .bind(col(rows, |c| c.title.clone()))
                .bind(col(rows, |c| yn(c.use_yn)))
                .bind(col(rows, |c| c.mod_dt))
        },
    )
    .await
}

async fn lcms_items(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lcms_item",
        &world.items,
        "INSERT INTO tb_lcms_item (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt)
         SELECT i, c, t, d, string_to_array(s, ','), string_to_array(k, ','), u, m
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
             AS x(i, c, t, d, s, k, u, m)",
        |q, rows| {
            q.bind(col(rows, |i| i.id.clone()))
                .bind(col(rows, |i| world.contents[i.content].id.clone()))
                .bind(col(rows, |i| i.item_type))
                .bind(col(rows, |i| i.difficulty))
                .bind(col(rows, |i| std_ids(world, i)))
                .bind(col(rows, |i| joined(&i.kc_ids)))
                .bind(col(rows, |i| yn(i.use_yn)))
                .bind(col(rows, |i| i.mod_dt))
        },
    )
    .await
}

/// The LMS copy as of the last copy run: rows changed since are stale
/// (older `mod_dt`) or missing.
async fn lms_contents_copy(
    conn: &mut PgConnection,
    world: &World,
    rows: &[&Content],
) -> anyhow::Result<(String, u64)> {
    let sync_dt = world.last_sync;
    insert(
        conn,
        "tb_lms_content",
        rows,
        "INSERT INTO tb_lms_content (content_id, course_id, content_type, title, use_yn, mod_dt, sync_dt)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[])",
        |q, rows| {
            let copy = |c: &Content| c.lms.expect("only copied contents");
            q.bind(col(rows, |c| c.id.clone()))
                .bind(col(rows, |c| world.courses[c.course].id.clone()))
                .bind(col(rows, |c| c.kind.code()))
                .bind(col(rows, |c| c.title.clone()))
                .bind(col(rows, |c| yn(copy(c).use_yn)))
                .bind(col(rows, |c| copy(c).mod_dt))
                .bind(col(rows, |_| sync_dt))
        },
    )
    .await
}

async fn lms_items_copy(
    conn: &mut PgConnection,
    world: &World,
    rows: &[&Item],
) -> anyhow::Result<(String, u64)> {
    let sync_dt = world.last_sync;
    insert(
        conn,
        "tb_lms_item",
        rows,
        "INSERT INTO tb_lms_item (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt, sync_dt)
         SELECT i, c, t, d, string_to_array(s, ','), string_to_array(k, ','), u, m, y
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::text[], $7::text[],
                       $8::timestamptz[], $9::timestamptz[])
             AS x(i, c, t, d, s, k, u, m, y)",
        |q, rows| {
            let copy = |i: &Item| i.lms.expect("only copied items");
            q.bind(col(rows, |i| i.id.clone()))
                .bind(col(rows, |i| world.contents[i.content].id.clone()))
                .bind(col(rows, |i| i.item_type))
                .bind(col(rows, |i| i.difficulty))
                .bind(col(rows, |i| std_ids(world, i)))
                .bind(col(rows, |i| joined(&i.kc_ids)))
                .bind(col(rows, |i| yn(copy(i).use_yn)))
                .bind(col(rows, |i| copy(i).mod_dt))
                .bind(col(rows, |_| sync_dt))
        },
    )
    .await
}

/// Every (knowledge component, standard) pair of the curriculum, with the
/// number of LMS items tagged with both; pairs without items stay, as the
/// curriculum metadata defines them regardless of content.
async fn kc_std_map(
    conn: &mut PgConnection,
    world: &World,
    lms_items: &[&Item],
) -> anyhow::Result<(String, u64)> {
    let mut counts: BTreeMap<(&str, &str), i32> = BTreeMap::new();
    for s in &world.std_sys {
        for kc in &s.kc_ids {
            counts.insert((kc.as_str(), s.id.as_str()), 0);
        }
    }
    for item in lms_items {
        for &s in &item.std_sys {
            for kc in &item.kc_ids {
                if let Some(n) = counts.get_mut(&(kc.as_str(), world.std_sys[s].id.as_str())) {
                    *n += 1;
                }
            }
        }
    }
    let rows: Vec<_> = counts.into_iter().collect();
    let upd_dt = world.last_sync;
    insert(
        conn,
        "tb_lms_kc_std_map",
        &rows,
        "INSERT INTO tb_lms_kc_std_map (kc_id, std_sys_id, item_cnt, upd_dt)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0 .0.to_string()))
                .bind(col(rows, |r| r.0 .1.to_string()))
                .bind(col(rows, |r| r.1))
                .bind(col(rows, |_| upd_dt))
        },
    )
    .await
}

/// Every standard of each course, with the number of the course's LMS items
/// tagged with it.
async fn course_std_sys(
    conn: &mut PgConnection,
    world: &World,
    lms_items: &[&Item],
) -> anyhow::Result<(String, u64)> {
    let mut counts: BTreeMap<(usize, usize), i32> = BTreeMap::new();
    for (c, course) in world.courses.iter().enumerate() {
        for &s in course.areas.iter().flatten() {
            counts.insert((c, s), 0);
        }
    }
    for item in lms_items {
        let course = world.contents[item.content].course;
        for &s in &item.std_sys {
            *counts.entry((course, s)).or_default() += 1;
        }
    }
    let rows: Vec<_> = counts.into_iter().collect();
    let upd_dt = world.last_sync;
    insert(
        conn,
        "tb_lms_course_std_sys",
        &rows,
        "INSERT INTO tb_lms_course_std_sys (course_id, std_sys_id, item_cnt, upd_dt)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| world.courses[r.0 .0].id.clone()))
                .bind(col(rows, |r| world.std_sys[r.0 .1].id.clone()))
                .bind(col(rows, |r| r.1))
                .bind(col(rows, |_| upd_dt))
        },
    )
    .await
}
