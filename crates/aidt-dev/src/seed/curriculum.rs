//! The curriculum and its content: school levels and subjects, KERIS
//! standard-system ids with their achievement-standard codes and knowledge
//! components, one course per level, grade and subject, and the LCMS
//! contents and items of each course with the LMS's partial copy.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::Rng;

use super::gen::{self, chance};
use super::world::World;

/// Learning units (contents) per course.
pub(super) const CONTENTS_PER_COURSE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Level {
    E,
    M,
    H,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::E, Level::M, Level::H];

    pub fn code(self) -> &'static str {
        match self {
            Level::E => "E",
            Level::M => "M",
            Level::H => "H",
        }
    }

    /// The grades that use AI digital textbooks.
    pub fn grades(self) -> &'static [i16] {
        match self {
            Level::E => &[3, 4, 5, 6],
            Level::M => &[1, 2, 3],
            Level::H => &[1, 2],
        }
    }

    /// The grade-group digit of standard-system ids and the prefix of
    /// achievement-standard codes: the curriculum groups elementary grades
    /// in pairs (`[4수…]` for grades 3–4), middle school as `9`, and the
    /// common high-school subjects as `10` (digit `0` in the id).
    pub(super) fn group(self, grade: i16) -> (char, &'static str) {
        match (self, grade) {
            (Level::E, 3 | 4) => ('4', "4"),
            (Level::E, _) => ('6', "6"),
            (Level::M, _) => ('9', "9"),
            (Level::H, _) => ('0', "10"),
        }
    }

    pub(super) fn school_suffix(self) -> &'static str {
        match self {
            Level::E => "초등학교",
            Level::M => "중학교",
            Level::H => "고등학교",
        }
    }

    pub(super) fn ko(self) -> &'static str {
        match self {
            Level::E => "초등",
            Level::M => "중학",
            Level::H => "고등",
        }
    }
}

pub(super) struct Subject {
    pub code: &'static str,
    pub ko: &'static str,
    /// The subject's letter in achievement-standard codes (`[4수01-01]`).
    abbr: &'static str,
    /// Content areas (영역) of the curriculum.
    areas: &'static [&'static str],
}

pub(super) const SUBJECTS: [Subject; 7] = [
    Subject {
        code: "KOR",
        ko: "국어",
        abbr: "국",
        areas: &["듣기·말하기", "읽기", "쓰기", "문법", "문학", "매체"],
    },
    Subject {
        code: "SOC",
        ko: "사회",
        abbr: "사",
        areas: &[
            "지리 인식",
            "자연환경과 인간 생활",
            "정치",
            "경제",
            "역사 일반",
        ],
    },
    Subject {
        code: "ENG",
        ko: "영어",
        abbr: "영",
        areas: &["이해(듣기)", "이해(읽기)", "표현(말하기)", "표현(쓰기)"],
    },
    Subject {
        code: "SCI",
        ko: "과학",
        abbr: "과",
        areas: &[
            "운동과 에너지",
            "물질",
            "생명",
            "지구와 우주",
            "과학과 사회",
        ],
    },
    Subject {
        code: "PRA",
        ko: "실과",
        abbr: "실",
        areas: &[
            "인간 발달과 주도적 삶",
            "생활환경과 지속가능한 선택",
            "기술적 문제해결과 혁신",
            "지속가능한 기술과 융합",
        ],
    },
    Subject {
        code: "MAT",
        ko: "수학",
        abbr: "수",
        areas: &["수와 연산", "변화와 관계", "도형과 측정", "자료와 가능성"],
    },
    Subject {
        code: "INF",
        ko: "정보",
        abbr: "정",
        areas: &[
            "컴퓨팅 시스템",
            "데이터",
            "알고리즘과 프로그래밍",
            "인공지능",
            "디지털 문화",
        ],
    },
];

/// Indices into `SUBJECTS` taught with AI textbooks at a level and grade:
/// practical arts from elementary grade 5, informatics from middle school.
pub(super) fn subjects_for(level: Level, grade: i16) -> Vec<usize> {
    SUBJECTS
        .iter()
        .enumerate()
        .filter(|(_, s)| match (level, s.code) {
            (Level::E, "INF") => false,
            (Level::E, "PRA") => grade >= 5,
            (Level::H, "PRA") => false,
            _ => true,
        })
        .map(|(i, _)| i)
        .collect()
}

pub(super) struct StdSys {
    pub id: String,
    pub achv_std_cd: String,
    pub subject: usize,
    pub level: Level,
    pub name: String,
    /// Knowledge components taught under this standard.
    pub kc_ids: Vec<String>,
}

pub(super) struct Course {
    pub id: String,
    pub textbook_id: String,
    pub subject: usize,
    pub level: Level,
    pub grade: i16,
    pub name: String,
    /// Standard-system ids of the course, grouped by curriculum area.
    pub areas: Vec<Vec<usize>>,
    pub contents: Vec<usize>,
    /// Contents the LMS serves (copied and in use): what pupils can open.
    pub playable: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentKind {
    Lesson,
    Practice,
    Assessment,
    Video,
}

impl ContentKind {
    pub fn code(self) -> &'static str {
        match self {
            ContentKind::Lesson => "LESSON",
            ContentKind::Practice => "PRACTICE",
            ContentKind::Assessment => "ASSESSMENT",
            ContentKind::Video => "VIDEO",
        }
    }

    /// The xAPI activity type of the content as a whole.
    pub fn activity_type(self) -> &'static str {
        match self {
            ContentKind::Lesson => "lesson",
            ContentKind::Practice => "practice",
            ContentKind::Assessment => "assessment",
            ContentKind::Video => "video",
        }
    }

    fn ko(self) -> &'static str {
        match self {
            ContentKind::Lesson => "개념 학습",
            ContentKind::Practice => "연습 문제",
            ContentKind::Assessment => "단원 평가",
            ContentKind::Video => "개념 영상",
        }
    }
}

/// A row of the LMS copy: the copy's own `mod_dt` (older than the LCMS's
/// when the copy is stale).
#[derive(Debug, Clone, Copy)]
pub(super) struct LmsCopy {
    pub mod_dt: DateTime<Utc>,
    pub use_yn: bool,
}

pub(super) struct Content {
    pub id: String,
    pub course: usize,
    pub kind: ContentKind,
    pub title: String,
    pub use_yn: bool,
    pub mod_dt: DateTime<Utc>,
    pub lms: Option<LmsCopy>,
    pub items: Vec<usize>,
    /// Items the LMS serves (copied and in use).
    pub playable: Vec<usize>,
}

pub(super) struct Item {
    pub id: String,
    pub content: usize,
    /// `M` multiple choice, `S` short answer, `L` long answer, `E` essay.
    pub item_type: &'static str,
    pub difficulty: i16,
    pub std_sys: Vec<usize>,
    pub kc_ids: Vec<String>,
    pub use_yn: bool,
    pub mod_dt: DateTime<Utc>,
    pub lms: Option<LmsCopy>,
}

impl Item {
    /// A pupil's answer: `(correct, score)`. Multiple-choice and short
    /// answers are right or wrong; long answers and essays get partial
    /// scores, correct from 60. Harder items lower the odds.
    pub fn answer(&self, rng: &mut StdRng, ability: f64) -> (bool, u8) {
        let p = (ability + 0.08 * f64::from(3 - self.difficulty)).clamp(0.05, 0.97);
        match self.item_type {
            "M" | "S" => {
                let correct = chance(rng, p);
                (correct, if correct { 100 } else { 0 })
            }
            _ => {
                let score = (100.0 * p + rng.gen_range(-25.0..25.0))
                    .round()
                    .clamp(0.0, 100.0) as u8;
                (score >= 60, score)
            }
        }
    }
}

impl World {
    /// Standard-system ids per (level, grade group, subject): areas `A`,
    /// sub-areas `B`, standards `C`, and a few finer `D` nodes.
    pub(super) fn build_curriculum(&mut self, rng: &mut StdRng) {
        let mut group_std: BTreeMap<(Level, char, usize), Vec<Vec<usize>>> = BTreeMap::new();
        for level in Level::ALL {
            for &grade in level.grades() {
                let (digit, prefix) = level.group(grade);
                for subject in subjects_for(level, grade) {
                    if group_std.contains_key(&(level, digit, subject)) {
                        continue;
                    }
                    let areas = self.build_std_sys(rng, level, digit, prefix, subject);
                    group_std.insert((level, digit, subject), areas);
                }
            }
        }
        for level in Level::ALL {
            for &grade in level.grades() {
                let (digit, _) = level.group(grade);
                for subject in subjects_for(level, grade) {
                    let s = &SUBJECTS[subject];
                    self.courses.push(Course {
                        id: format!("CRS-{}{grade}-{}", level.code(), s.code),
                        textbook_id: format!("TXB-{}{grade}{}-01", level.code(), s.code),
                        subject,
                        level,
                        grade,
                        name: format!("{} {} {grade}", level.ko(), s.ko),
                        areas: group_std[&(level, digit, subject)].clone(),
                        contents: Vec::new(),
                        playable: Vec::new(),
                    });
                }
            }
        }
    }

    fn build_std_sys(
        &mut self,
        rng: &mut StdRng,
        level: Level,
        digit: char,
        prefix: &str,
        subject: usize,
    ) -> Vec<Vec<usize>> {
        let s = &SUBJECTS[subject];
        let mut areas = Vec::new();
        let mut kc_no = 0;
        for (a, area_nm) in s.areas.iter().enumerate() {
            let a = a + 1;
            let mut in_area = Vec::new();
            let mut standard_no = 0;
            for b in 1..=rng.gen_range(2..=3) {
                for c in 1..=rng.gen_range(2..=3) {
                    standard_no += 1;
                    let achv = format!("[{prefix}{}{a:02}-{standard_no:02}]", s.abbr);
                    let id = format!("{}{digit}{}A{a:02}B{b:02}C{c:02}", level.code(), s.code);
                    let mut ids = vec![id.clone()];
                    // Some standards are split once more, in `D` nodes.
                    if chance(rng, 0.15) {
                        ids.extend((1..=2).map(|d| format!("{id}D{d:02}")));
                    }
                    for id in ids {
                        let kc_ids = (0..2)
                            .map(|_| {
                                kc_no += 1;
                                format!("KC-{}{digit}{}-{kc_no:03}", level.code(), s.code)
                            })
                            .collect();
                        in_area.push(self.std_sys.len());
                        self.std_sys.push(StdSys {
                            name: format!("{} {} {achv}", s.ko, area_nm),
                            id,
                            achv_std_cd: achv.clone(),
                            subject,
                            level,
                            kc_ids,
                        });
                    }
                }
            }
            areas.push(in_area);
        }
        areas
    }

    /// LCMS contents and items, and which of them the LMS copied: changes
    /// made after the last copy run are missing or stale in the copy, so the
    /// LCMS copy job has work.
    pub(super) fn build_content(&mut self, rng: &mut StdRng) {
        const KINDS: [ContentKind; 4] = [
            ContentKind::Lesson,
            ContentKind::Practice,
            ContentKind::Assessment,
            ContentKind::Video,
        ];
        const KIND_WEIGHTS: [u32; 4] = [40, 25, 20, 15];
        const ITEM_TYPES: [&str; 4] = ["M", "S", "L", "E"];
        const ITEM_TYPE_WEIGHTS: [u32; 4] = [55, 25, 12, 8];
        const DIFFICULTY_WEIGHTS: [u32; 5] = [15, 25, 30, 20, 10];
        for course in 0..self.courses.len() {
            let n_areas = self.courses[course].areas.len();
            let subject = &SUBJECTS[self.courses[course].subject];
            for unit in 1..=CONTENTS_PER_COURSE {
                let area = (unit - 1) % n_areas;
                let kind = KINDS[gen::weighted(rng, &KIND_WEIGHTS)];
                let use_yn = !chance(rng, 0.03);
                let mod_dt = self.lcms_mod_dt(rng);
                let lms = self.lms_copy(rng, mod_dt, use_yn);
                let content_idx = self.contents.len();
                let content_id = format!("CNT-{}-{unit:02}", &self.courses[course].id[4..]);
                let mut content = Content {
                    title: format!("{unit}단원 {} {}", subject.areas[area], kind.ko()),
                    id: content_id,
                    course,
                    kind,
                    use_yn,
                    mod_dt,
                    lms,
                    items: Vec::new(),
                    playable: Vec::new(),
                };
                let area_std = &self.courses[course].areas[area];
                for q in 1..=rng.gen_range(5..=12) {
                    let mut std_sys = vec![*gen::pick(rng, area_std)];
                    if chance(rng, 0.2) {
                        let other = *gen::pick(rng, area_std);
                        if !std_sys.contains(&other) {
                            std_sys.push(other);
                        }
                    }
                    let mut kc_ids: Vec<String> = Vec::new();
                    for &s in &std_sys {
                        let kcs = &self.std_sys[s].kc_ids;
                        kc_ids.push(gen::pick(rng, kcs).clone());
                        if chance(rng, 0.4) && !kc_ids.contains(&kcs[1]) {
                            kc_ids.push(kcs[1].clone());
                        }
                    }
                    let use_yn = !chance(rng, 0.03);
                    let mod_dt = self.lcms_mod_dt(rng);
                    // The LMS copies an item only with its content.
                    let lms = if content.lms.is_some() {
                        self.lms_copy(rng, mod_dt, use_yn)
                    } else {
                        None
                    };
                    let item = self.items.len();
                    if lms.is_some_and(|c| c.use_yn) && content.lms.is_some_and(|c| c.use_yn) {
                        content.playable.push(item);
                    }
                    content.items.push(item);
                    self.items.push(Item {
                        id: format!("ITM-{}-{unit:02}-{q:02}", &self.courses[course].id[4..]),
                        content: content_idx,
                        item_type: ITEM_TYPES[gen::weighted(rng, &ITEM_TYPE_WEIGHTS)],
                        difficulty: 1 + gen::weighted(rng, &DIFFICULTY_WEIGHTS) as i16,
                        std_sys,
                        kc_ids,
                        use_yn,
                        mod_dt,
                        lms,
                    });
                }
                if !content.playable.is_empty() {
                    self.courses[course].playable.push(content_idx);
                }
                self.courses[course].contents.push(content_idx);
                self.contents.push(content);
            }
        }
    }

    /// Most LCMS rows were last changed weeks ago; a few on the business date.
    fn lcms_mod_dt(&self, rng: &mut StdRng) -> DateTime<Utc> {
        if chance(rng, 0.06) {
            self.day.between(rng, self.last_sync, self.day.end)
        } else {
            self.day.days_back(rng, 1.5, 180.0)
        }
    }

    fn lms_copy(
        &self,
        rng: &mut StdRng,
        lcms_mod_dt: DateTime<Utc>,
        use_yn: bool,
    ) -> Option<LmsCopy> {
        if lcms_mod_dt <= self.last_sync {
            // A few rows were never copied (added while a copy run failed).
            (!chance(rng, 0.03)).then_some(LmsCopy {
                mod_dt: lcms_mod_dt,
                use_yn,
            })
        } else if chance(rng, 0.5) {
            // Changed after the last copy: the copy holds the previous version.
            Some(LmsCopy {
                mod_dt: lcms_mod_dt - Duration::days(rng.gen_range(1..60)),
                use_yn: true,
            })
        } else {
            // Created after the last copy.
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::gen::Day;
    use chrono::NaiveDate;
    use uuid::Uuid;

    /// `^[EMH]\d(KOR|SOC|ENG|SCI|PRA|MAT|INF)A\d{2}(B\d{2})?(C\d{2})?(D\d{2})?$`, without a regex crate.
    fn matches_keris_pattern(id: &str) -> bool {
        let b = id.as_bytes();
        if b.len() < 8 || !matches!(b[0], b'E' | b'M' | b'H') || !b[1].is_ascii_digit() {
            return false;
        }
        if !SUBJECTS.iter().any(|s| &id[2..5] == s.code) {
            return false;
        }
        let mut rest = &b[5..];
        for (i, letter) in [b'A', b'B', b'C', b'D'].into_iter().enumerate() {
            match rest {
                [l, d1, d2, tail @ ..]
                    if *l == letter && d1.is_ascii_digit() && d2.is_ascii_digit() =>
                {
                    rest = tail
                }
                _ if i == 0 => return false,
                _ => {}
            }
        }
        rest.is_empty()
    }

    #[test]
    fn standard_system_ids_match_the_keris_pattern() {
        assert!(matches_keris_pattern("E4MATA01B01C01"));
        assert!(matches_keris_pattern("M9INFA02"));
        assert!(!matches_keris_pattern("E4MATB01"));
        assert!(!matches_keris_pattern("X4MATA01"));
        let day = Day::new(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        let world = World::build(42, day, vec![Uuid::nil()], 3, 50);
        for s in &world.std_sys {
            assert!(matches_keris_pattern(&s.id), "{}", s.id);
            assert!(
                s.achv_std_cd.starts_with('[') && s.achv_std_cd.ends_with(']'),
                "{}",
                s.achv_std_cd
            );
        }
    }

    #[test]
    fn every_course_has_content_the_lms_serves() {
        let day = Day::new(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        let world = World::build(42, day, vec![Uuid::nil()], 3, 50);
        assert_eq!(
            world
                .courses
                .iter()
                .map(|c| SUBJECTS[c.subject].code)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            7
        );
        for course in &world.courses {
            assert!(!course.playable.is_empty(), "{}", course.id);
            for &c in &course.playable {
                assert!(world.contents[c].lms.is_some());
                assert!(world.contents[c]
                    .playable
                    .iter()
                    .all(|&i| world.items[i].lms.is_some_and(|copy| copy.use_yn)));
            }
        }
    }
}
