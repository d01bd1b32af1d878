//! LMS-01-003 — KC → achievement-standard mapping. Daily at 04:00.
//!
//! Rebuilds `tb_lms_kc_std_map` (`kc_id`, `std_sys_id`, `item_cnt`) from
//! the LMS's copy of the LCMS content (LCMS-01-001, 01:00): for every active
//! item (the item and its content `use_yn = 'Y'`), each of its `kc_ids`
//! with each of its `std_sys_ids`; `item_cnt` counts distinct items. Pairs
//! no longer present are deleted, unchanged pairs keep their `upd_dt`, all in
//! one transaction (the rebuild it shares with LMS-01-010 is in
//! [`super::std_map`]). A standard-system id unknown to `tb_lms_std_sys` is
//! not written: counted as skipped, the first 20 (item, code) pairs in the
//! run's details; items with no KC, NULL elements and the like are counted
//! and listed there too.
//!
//! Rerun: safe; a second run changes nothing. `--dry-run` rebuilds inside a
//! transaction, reports what would change and rolls back.

use super::std_map::{self, KC_STD_MAP};
use crate::runtime::registry::JobDef;

pub const ID: &str = "LMS-01-003";

/// This job in the registry.
pub static DEF: JobDef = std_map::job_def(
    ID,
    &KC_STD_MAP,
    "KC-성취기준코드 정보 매핑 저장 배치",
    "Save KC to achievement-standard mapping",
    "Rebuilds tb_lms_kc_std_map (KC id x standard-system id, distinct active items) from the LMS copy of the LCMS items, in one transaction; unknown standard-system ids are skipped and listed in the run's details.",
    "0 4 * * *",
);
