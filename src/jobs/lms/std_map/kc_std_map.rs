//! LMS-01-003 — KC → achievement-standard mapping. Daily at 04:00.
//!
//! Rebuilds `tb_lms_kc_std_map` (`kc_id`, `std_sys_id`, `item_cnt`) from
//! the LMS's copy of the LCMS content (LCMS-01-001, 01:00): for every active
//! item (the item and its content `use_yn = 'Y'`), each of its `kc_ids`
//! with each of its `std_sys_ids`; `item_cnt` counts distinct items. Pairs
//! no longer present are deleted, unchanged pairs keep their `upd_dt`, all in
//! one transaction (the rebuild it shares with LMS-01-010 is in
//! [`super`]). A standard-system id unknown to `tb_lms_std_sys` is
//! not written: counted as skipped, the first 20 (item, code) pairs in the
//! run's details; items with no KC, NULL elements and the like are counted
//! and listed there too.
//!
//! Rerun: safe; a second run changes nothing. `--dry-run` rebuilds inside a
//! transaction, reports what would change and rolls back.

use super::StdMap;
use crate::runtime::registry::JobDef;
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-003";

/// This job in the registry.
pub static DEF: JobDef = super::job_def(
    ID,
    &KcStdMap,
    "KC-성취기준코드 정보 매핑 저장 배치",
    "Save KC to achievement-standard mapping",
    "Rebuilds tb_lms_kc_std_map (KC id x standard-system id, distinct active items) from the LMS copy of the LCMS items, in one transaction; unknown standard-system ids are skipped and listed in the run's details.",
    "0 4 * * *",
);

/// `tb_lms_kc_std_map`: (KC, standard-system id) of every active item,
/// `kc_ids × std_sys_ids`.
pub const MAP: StdMap = StdMap {
    table: "tb_lms_kc_std_map",
    key_column: "kc_id",
    keyed_by_kc: true,
};

/// The job: the shared rebuild over [`MAP`].
pub struct KcStdMap;

#[async_trait::async_trait]
impl Job for KcStdMap {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        super::run(ctx, MAP).await
    }
}
