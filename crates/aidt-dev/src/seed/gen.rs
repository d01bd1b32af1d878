//! Deterministic building blocks of the generator: random streams, ids,
//! names and times. Nothing here reads the clock or the OS random source, so
//! the same seed and business date always give the same values.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use aidt_batch::time;

/// One independent random stream per table group: a change to how one group
/// is generated (one more column, one more row) does not reshuffle the
/// others, so diffs between two versions of the generator stay small.
pub(crate) fn stream(seed: u64, group: &str) -> StdRng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(group.as_bytes());
    StdRng::from_seed(hasher.finalize().into())
}

/// A UUID built from the stream's bytes (not `Uuid::new_v4`, which reads the
/// OS random source and would break reproducibility).
pub(crate) fn uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

/// `true` with probability `p`.
pub(super) fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.gen_bool(p.clamp(0.0, 1.0))
}

/// An index drawn with the given relative weights.
pub(super) fn weighted(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut pick = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if pick < *w {
            return i;
        }
        pick -= w;
    }
    weights.len() - 1
}

/// One element of a non-empty slice.
pub(crate) fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

// Names --------------------------------------------------------------------------

/// The most frequent Korean family names, the first ones weighted up as
/// they are in the population (김, 이, 박 cover almost half of it).
const FAMILY_NAMES: [&str; 20] = [
    "김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오", "서", "신", "권", "황",
    "안", "송", "류", "홍",
];
const FAMILY_WEIGHTS: [u32; 20] = [21, 15, 8, 5, 4, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1];
const GIVEN_SYLLABLES: [&str; 40] = [
    "민", "서", "준", "지", "현", "우", "예", "도", "하", "윤", "수", "아", "은", "연", "진", "재",
    "유", "승", "시", "건", "채", "다", "소", "태", "주", "성", "영", "혜", "경", "원", "빈", "율",
    "온", "결", "훈", "호", "인", "나", "린", "희",
];

/// A plausible Korean full name: family name and two given-name syllables.
pub(super) fn person_name(rng: &mut StdRng) -> String {
    let family = FAMILY_NAMES[weighted(rng, &FAMILY_WEIGHTS)];
    let a = pick(rng, &GIVEN_SYLLABLES);
    let b = pick(rng, &GIVEN_SYLLABLES);
    format!("{family}{a}{b}")
}

/// Lower-case hex of `n` random bytes (tokens, e-mail local parts).
pub(super) fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

/// A client IP: mostly school networks (private ranges behind NAT), some
/// home connections.
pub(super) fn ip(rng: &mut StdRng) -> String {
    if chance(rng, 0.7) {
        format!(
            "10.{}.{}.{}",
            rng.gen_range(0..=255),
            rng.gen_range(0..=255),
            rng.gen_range(1..=254)
        )
    } else {
        let first = *pick(rng, &[58u8, 106, 112, 121, 175, 211, 218, 222]);
        format!(
            "{first}.{}.{}.{}",
            rng.gen_range(0..=255),
            rng.gen_range(0..=255),
            rng.gen_range(1..=254)
        )
    }
}

// Times --------------------------------------------------------------------------

/// The business date and its bounds as UTC instants. Every time the generator
/// writes is an offset from these, never from the clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Day {
    pub date: NaiveDate,
    /// 00:00 of the business date in Seoul.
    pub start: DateTime<Utc>,
    /// 00:00 of the next day in Seoul (exclusive end).
    pub end: DateTime<Utc>,
}

impl Day {
    pub fn new(date: NaiveDate) -> Self {
        let start = time::start_of_day_seoul(date);
        Self {
            date,
            start,
            end: start + Duration::days(1),
        }
    }

    /// `hours:minutes` Seoul time on the business date, plus `days`.
    pub fn at(&self, days: i64, hours: i64, minutes: i64) -> DateTime<Utc> {
        self.start + Duration::days(days) + Duration::hours(hours) + Duration::minutes(minutes)
    }

    /// A time on the business date when pupils are likely to be learning:
    /// mostly school hours, some homework in the evening, hardly any at night.
    pub fn learning_time(&self, rng: &mut StdRng) -> DateTime<Utc> {
        // Weight per Seoul hour 0..23.
        const HOUR_WEIGHTS: [u32; 24] = [
            1, 0, 0, 0, 0, 0, 1, 2, 6, 12, 14, 14, 8, 12, 14, 12, 8, 6, 5, 7, 8, 6, 3, 1,
        ];
        let hour = weighted(rng, &HOUR_WEIGHTS) as i64;
        self.start + Duration::hours(hour) + Duration::milliseconds(rng.gen_range(0..3_600_000))
    }

    /// A uniformly random instant between `days_back_max` and `days_back_min`
    /// days before the end of the business date.
    pub fn days_back(
        &self,
        rng: &mut StdRng,
        days_back_min: f64,
        days_back_max: f64,
    ) -> DateTime<Utc> {
        let secs = rng.gen_range(days_back_min * 86_400.0..days_back_max * 86_400.0) as i64;
        self.end - Duration::seconds(secs.max(1))
    }

    /// A random instant in `[from, to)`, or `from` if the range is empty.
    pub fn between(
        &self,
        rng: &mut StdRng,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let span = (to - from).num_milliseconds();
        if span <= 1 {
            return from;
        }
        from + Duration::milliseconds(rng.gen_range(0..span))
    }

    /// Clamps an instant into the business date (the last millisecond at most).
    pub fn clamp(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.clamp(self.start, self.end - Duration::milliseconds(1))
    }
}

/// RFC 3339 with milliseconds and the Seoul offset, as KERIS and the LRS
/// write statement timestamps (`2026-03-05T09:10:00.000+09:00`).
pub(crate) fn rfc3339_seoul(t: DateTime<Utc>) -> String {
    t.with_timezone(&time::seoul())
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

/// The achievement level of a score, by school level (keris-api.md): middle
/// and high school use A–E in steps of ten from 90; elementary school uses
/// A–C with 80 and 60.
pub(super) fn achievement_level(elementary: bool, score: u8) -> &'static str {
    if elementary {
        match score {
            80.. => "A",
            60.. => "B",
            _ => "C",
        }
    } else {
        match score {
            90.. => "A",
            80.. => "B",
            70.. => "C",
            60.. => "D",
            _ => "E",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: u64 = stream(7, "users").gen();
        let b: u64 = stream(7, "users").gen();
        let c: u64 = stream(7, "logs").gen();
        let d: u64 = stream(8, "users").gen();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn achievement_levels_follow_the_school_level_cut_offs() {
        assert_eq!(achievement_level(false, 90), "A");
        assert_eq!(achievement_level(false, 89), "B");
        assert_eq!(achievement_level(false, 60), "D");
        assert_eq!(achievement_level(false, 59), "E");
        assert_eq!(achievement_level(true, 80), "A");
        assert_eq!(achievement_level(true, 79), "B");
        assert_eq!(achievement_level(true, 59), "C");
    }

    #[test]
    fn statement_times_carry_milliseconds_and_the_seoul_offset() {
        let day = Day::new(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        assert_eq!(
            rfc3339_seoul(day.at(0, 9, 10)),
            "2026-03-05T09:10:00.000+09:00"
        );
    }

    #[test]
    fn learning_times_stay_within_the_business_date() {
        let day = Day::new(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        let mut rng = stream(1, "t");
        for _ in 0..10_000 {
            let t = day.learning_time(&mut rng);
            assert!(t >= day.start && t < day.end);
        }
    }
}
