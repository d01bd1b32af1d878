//! LMS-01-010 — standard-system codes per course. Daily at 04:30.
//!
//! Rebuilds `tb_lms_course_std_sys` (`course_id`, `std_sys_id`,
//! `item_cnt`) from the LMS's copy of the LCMS content: for each course,
//! the standard-system ids of the active items (item and content
//! `use_yn = 'Y'`) of its contents; `item_cnt` counts distinct items. Same
//! rules as LMS-01-003, whose rebuild it shares ([`super`]):
//! vanished pairs deleted, unchanged pairs keep `upd_dt`, one transaction,
//! unknown codes skipped and reported (the first 20 (item, code) pairs in
//! the run's details).
//!
//! Rerun: safe; a second run changes nothing. `--dry-run` rebuilds inside a
//! transaction, reports what would change and rolls back.

use super::StdMap;
use crate::runtime::registry::JobDef;
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-010";

/// This job in the registry.
pub static DEF: JobDef = super::job_def(
    ID,
    &CourseStdSys,
    "코스ID별 표준체계코드 저장",
    "Save standard-system codes per course",
    "Rebuilds tb_lms_course_std_sys (course x standard-system id, distinct active items) from the LMS copy of the LCMS content and items, in one transaction; unknown standard-system ids are skipped and listed in the run's details.",
    "30 4 * * *",
);

/// `tb_lms_course_std_sys`: (course of the item's content, standard-system id).
pub const MAP: StdMap = StdMap {
    table: "tb_lms_course_std_sys",
    key_column: "course_id",
    keyed_by_kc: false,
};

/// The job: the shared rebuild over [`MAP`].
pub struct CourseStdSys;

#[async_trait::async_trait]
impl Job for CourseStdSys {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        super::run(ctx, MAP).await
    }
}
