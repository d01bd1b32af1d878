//! The generated world, in memory: schools, users and lectures over the
//! curriculum of `curriculum.rs`, plus who learns what on the business date. Every table writer
//! and the statement generator draw from this one model, which is what keeps
//! the data consistent (a result's user is a member of the result's lecture,
//! whose course holds the item, whose standard-system id exists, …).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use uuid::Uuid;

use super::curriculum::{subjects_for, CONTENTS_PER_COURSE};
pub(super) use super::curriculum::{Content, ContentKind, Course, Item, Level, StdSys, SUBJECTS};
use super::gen::{self, chance, Day};

/// Pupils per class; Korean classes have 20–30.
const CLASS_SIZE: usize = 25;
/// Share of students who learn on the business date.
const ACTIVE_SHARE: f64 = 0.85;
/// Share of students without a KERIS token (never launched from KERIS).
const NO_TOKEN_SHARE: f64 = 0.03;

pub(super) struct School {
    pub id: String,
    pub name: String,
    pub level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UserType {
    Student,
    Teacher,
    Parent,
}

impl UserType {
    pub fn code(self) -> &'static str {
        match self {
            UserType::Student => "S",
            UserType::Teacher => "T",
            UserType::Parent => "P",
        }
    }
}

pub(super) struct User {
    pub id: Uuid,
    pub partner: usize,
    pub kind: UserType,
    pub school: usize,
    pub grade: Option<i16>,
    pub class_no: Option<i16>,
    pub name: String,
    pub email: Option<String>,
    pub reg_dt: DateTime<Utc>,
}

/// The student's `PRVC_PROVIDE` consent (third-party provision of personal data).
#[derive(Debug, Clone, Copy)]
pub(super) enum Consent {
    Agreed {
        agree_dt: DateTime<Utc>,
    },
    /// Declined at registration: `agree_yn = 'N'`, no dates.
    Refused,
    /// Agreed, later withdrew: `agree_yn = 'N'` with `withdraw_dt`.
    Withdrawn {
        agree_dt: DateTime<Utc>,
        withdraw_dt: DateTime<Utc>,
    },
    /// No consent row at all.
    Missing,
}

pub(super) struct Token {
    pub token: String,
    pub access_id: String,
    pub issued_at: DateTime<Utc>,
}

pub(super) struct Student {
    pub user: usize,
    pub consent: Consent,
    pub token: Option<Token>,
    /// 0..1: how likely the pupil answers correctly.
    pub ability: f64,
    /// Relative activity: a few pupils produce many statements.
    pub weight: f64,
    pub lectures: Vec<usize>,
    /// The lectures the pupil works in on the business date (empty: inactive).
    pub today: Vec<usize>,
    /// Where in the course the pupil is: the contents they open cluster
    /// here, which makes repeated attempts on the same item common.
    pub focus: usize,
}

pub(super) struct Lecture {
    pub code: String,
    pub course: usize,
    pub school: usize,
    /// Index into `World::users`.
    pub teacher: usize,
    pub name: String,
    /// Indices into `World::students`.
    pub members: Vec<usize>,
}

pub(super) struct World {
    pub day: Day,
    pub partners: Vec<Uuid>,
    pub schools: Vec<School>,
    pub users: Vec<User>,
    pub students: Vec<Student>,
    /// Indices into `users`.
    pub teachers: Vec<usize>,
    pub std_sys: Vec<StdSys>,
    pub courses: Vec<Course>,
    pub contents: Vec<Content>,
    pub items: Vec<Item>,
    pub lectures: Vec<Lecture>,
    /// When the LMS last copied LCMS content (the LCMS-01-001 run at 01:00
    /// of the business date); LCMS changes after it are not in the copy yet.
    pub last_sync: DateTime<Utc>,
}

impl World {
    pub fn build(
        seed: u64,
        day: Day,
        partners: Vec<Uuid>,
        n_schools: usize,
        n_students: usize,
    ) -> Self {
        let mut world = World {
            day,
            partners,
            schools: Vec::new(),
            users: Vec::new(),
            students: Vec::new(),
            teachers: Vec::new(),
            std_sys: Vec::new(),
            courses: Vec::new(),
            contents: Vec::new(),
            items: Vec::new(),
            lectures: Vec::new(),
            last_sync: day.at(0, 1, 0),
        };
        world.build_schools(&mut gen::stream(seed, "schools"), n_schools);
        world.build_curriculum(&mut gen::stream(seed, "curriculum"));
        world.build_content(&mut gen::stream(seed, "content"));
        world.build_students(&mut gen::stream(seed, "students"), n_students);
        world.build_lectures(&mut gen::stream(seed, "lectures"));
        world.build_parents(&mut gen::stream(seed, "parents"));
        world.plan_day(&mut gen::stream(seed, "plan"));
        world
    }

    pub fn user_of(&self, student: usize) -> &User {
        &self.users[self.students[student].user]
    }

    pub fn partner_of(&self, user: &User) -> Uuid {
        self.partners[user.partner]
    }

    pub fn level_of(&self, user: &User) -> Level {
        self.schools[user.school].level
    }

    /// Schools cycle through E, M, H so every level exists; each school uses
    /// one partner's textbooks, so its users belong to that partner.
    fn build_schools(&mut self, rng: &mut StdRng, n: usize) {
        const PLACES: [&str; 18] = [
            "서울", "부산", "대구", "인천", "광주", "대전", "울산", "세종", "수원", "성남", "고양",
            "용인", "청주", "전주", "천안", "포항", "창원", "제주",
        ];
        const WORDS: [&str; 15] = [
            "한빛",
            "새솔",
            "푸른",
            "은하",
            "미래",
            "해오름",
            "가람",
            "누리",
            "다솜",
            "한울",
            "별빛",
            "솔빛",
            "도담",
            "이음",
            "큰별",
        ];
        // NEIS-style codes: the education office's letter and digits.
        const OFFICES: [char; 17] = [
            'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'M', 'N', 'P', 'Q', 'R', 'S', 'T',
        ];
        for i in 0..n {
            let level = Level::ALL[i % 3];
            let name = format!(
                "{}{}{}",
                gen::pick(rng, &PLACES),
                gen::pick(rng, &WORDS),
                level.school_suffix()
            );
            let id = format!("{}{}{:08}", gen::pick(rng, &OFFICES), 1 + i % 3, i + 1);
            self.schools.push(School { id, name, level });
        }
    }

    /// Students spread evenly over schools, then over grades and classes.
    fn build_students(&mut self, rng: &mut StdRng, n: usize) {
        let n_schools = self.schools.len();
        let mut per_school = vec![0usize; n_schools];
        for s in 0..n {
            let school = s % n_schools;
            let level = self.schools[school].level;
            let k = per_school[school];
            per_school[school] += 1;
            let grades = level.grades();
            let grade = grades[k % grades.len()];
            // Class numbers are fixed after all are placed (see build_lectures).
            let reg_dt = self.day.days_back(rng, 1.0, 90.0);
            let email = chance(rng, 0.6).then(|| format!("s{}@edu.example.kr", gen::hex(rng, 5)));
            let user = self.users.len();
            self.users.push(User {
                id: gen::uuid(rng),
                partner: school % self.partners.len(),
                kind: UserType::Student,
                school,
                grade: Some(grade),
                class_no: None,
                name: gen::person_name(rng),
                email,
                reg_dt,
            });
            let consent = match gen::weighted(rng, &[70, 12, 8, 10]) {
                0 => Consent::Agreed {
                    agree_dt: self
                        .day
                        .between(rng, reg_dt, reg_dt + Duration::days(2))
                        .min(self.day.start),
                },
                1 => Consent::Refused,
                2 => {
                    let agree_dt = reg_dt + Duration::minutes(rng.gen_range(1..600));
                    Consent::Withdrawn {
                        agree_dt,
                        withdraw_dt: self.day.between(rng, agree_dt, self.day.end),
                    }
                }
                _ => Consent::Missing,
            };
            let token = (!chance(rng, NO_TOKEN_SHARE)).then(|| Token {
                token: gen::hex(rng, 32),
                access_id: gen::uuid(rng).to_string(),
                issued_at: self.day.between(rng, reg_dt, self.day.at(0, 8, 0)),
            });
            // The mean of two uniforms: most pupils are average, few extreme.
            let ability = 0.25 + 0.35 * (rng.gen::<f64>() + rng.gen::<f64>());
            let weight = 0.2 + 2.0 * rng.gen::<f64>().powi(2);
            self.students.push(Student {
                user,
                consent,
                token,
                ability,
                weight,
                lectures: Vec::new(),
                today: Vec::new(),
                focus: rng.gen_range(0..CONTENTS_PER_COURSE),
            });
        }
    }

    /// Classes of `CLASS_SIZE`, one lecture per class and subject. Elementary
    /// classes have one homeroom teacher for all subjects; middle and high
    /// schools one teacher per grade and subject.
    fn build_lectures(&mut self, rng: &mut StdRng) {
        let mut by_grade: BTreeMap<(usize, i16), Vec<usize>> = BTreeMap::new();
        for (s, student) in self.students.iter().enumerate() {
            let user = &self.users[student.user];
            by_grade
                .entry((user.school, user.grade.expect("students have a grade")))
                .or_default()
                .push(s);
        }
        let course_of: HashMap<(Level, i16, usize), usize> = self
            .courses
            .iter()
            .enumerate()
            .map(|(i, c)| ((c.level, c.grade, c.subject), i))
            .collect();
        let mut teacher_of: BTreeMap<(usize, i16, i16, usize), usize> = BTreeMap::new();
        for ((school, grade), members) in by_grade {
            let level = self.schools[school].level;
            let classes = members.len().div_ceil(CLASS_SIZE).max(1);
            for class in 1..=classes as i16 {
                let in_class: Vec<usize> = members
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| k % classes == (class - 1) as usize)
                    .map(|(_, &s)| s)
                    .collect();
                for &s in &in_class {
                    let user = self.students[s].user;
                    self.users[user].class_no = Some(class);
                }
                for subject in subjects_for(level, grade) {
                    let key = if level == Level::E {
                        (school, grade, class, 0)
                    } else {
                        (school, grade, 0, subject + 1)
                    };
                    let teacher = match teacher_of.get(&key) {
                        Some(&t) => t,
                        None => {
                            let t = self.add_teacher(
                                rng,
                                school,
                                (level == Level::E).then_some((grade, class)),
                            );
                            teacher_of.insert(key, t);
                            t
                        }
                    };
                    let lecture = self.lectures.len();
                    for &s in &in_class {
                        self.students[s].lectures.push(lecture);
                    }
                    self.lectures.push(Lecture {
                        code: format!(
                            "{}-{grade}{class:02}-{}",
                            self.schools[school].id, SUBJECTS[subject].code
                        ),
                        course: course_of[&(level, grade, subject)],
                        school,
                        teacher,
                        name: format!("{grade}학년 {class}반 {}", SUBJECTS[subject].ko),
                        members: in_class.clone(),
                    });
                }
            }
        }
    }

    fn add_teacher(
        &mut self,
        rng: &mut StdRng,
        school: usize,
        homeroom: Option<(i16, i16)>,
    ) -> usize {
        let user = self.users.len();
        self.users.push(User {
            id: gen::uuid(rng),
            partner: school % self.partners.len(),
            kind: UserType::Teacher,
            school,
            grade: homeroom.map(|(g, _)| g),
            class_no: homeroom.map(|(_, c)| c),
            name: gen::person_name(rng),
            email: Some(format!("t{}@school.example.kr", gen::hex(rng, 5))),
            // Teachers have used the platform far longer than this term's pupils.
            reg_dt: self.day.days_back(rng, 100.0, 1200.0),
        });
        self.teachers.push(user);
        user
    }

    /// A few parents (3% of pupils), registered right after their child.
    fn build_parents(&mut self, rng: &mut StdRng) {
        let n = (self.students.len() * 3 / 100).max(1);
        for _ in 0..n {
            let child = &self.users[self.students[rng.gen_range(0..self.students.len())].user];
            let (school, partner, child_reg) = (child.school, child.partner, child.reg_dt);
            let reg_dt = self
                .day
                .between(rng, child_reg, child_reg + Duration::days(3))
                .min(self.day.start);
            self.users.push(User {
                id: gen::uuid(rng),
                partner,
                kind: UserType::Parent,
                school,
                grade: None,
                class_no: None,
                name: gen::person_name(rng),
                email: Some(format!("p{}@mail.example.kr", gen::hex(rng, 5))),
                reg_dt,
            });
        }
    }

    /// Who learns on the business date, and in which lectures. At least one
    /// pupil is active so tiny worlds still get statements.
    fn plan_day(&mut self, rng: &mut StdRng) {
        for (s, student) in self.students.iter_mut().enumerate() {
            let usable: Vec<usize> = student
                .lectures
                .iter()
                .copied()
                .filter(|&l| !self.courses[self.lectures[l].course].playable.is_empty())
                .collect();
            if usable.is_empty() || (s > 0 && !chance(rng, ACTIVE_SHARE)) {
                continue;
            }
            let n = rng.gen_range(1..=usable.len().min(3));
            student.today = usable.choose_multiple(rng, n).copied().collect();
        }
    }

    /// A content of a course the pupil opens: near their place in the course.
    pub fn pick_content(&self, rng: &mut StdRng, student: &Student, course: usize) -> usize {
        let playable = &self.courses[course].playable;
        playable[(student.focus + rng.gen_range(0..3)) % playable.len()]
    }

    /// An item of a playable content.
    pub fn pick_item(&self, rng: &mut StdRng, content: usize) -> usize {
        *gen::pick(rng, &self.contents[content].playable)
    }

    /// Indices of students active on the business date.
    pub fn active_students(&self) -> Vec<usize> {
        (0..self.students.len())
            .filter(|&s| !self.students[s].today.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn small_world() -> World {
        let day = Day::new(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        World::build(42, day, vec![Uuid::nil(), Uuid::max()], 6, 300)
    }

    #[test]
    fn every_lecture_member_is_a_student_of_the_lecture_school() {
        let world = small_world();
        for lecture in &world.lectures {
            assert!(!lecture.members.is_empty());
            assert_eq!(world.users[lecture.teacher].kind, UserType::Teacher);
            for &m in &lecture.members {
                assert_eq!(world.user_of(m).school, lecture.school);
            }
        }
        assert!(world.students.iter().all(|s| !s.lectures.is_empty()));
    }

    #[test]
    fn the_same_seed_builds_the_same_world() {
        let a = small_world();
        let b = small_world();
        let ids = |w: &World| {
            w.users
                .iter()
                .map(|u| (u.id, u.name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
    }
}
