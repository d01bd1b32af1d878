//! Partitions: one run of a job that works student by student does only the
//! students of partition `I` of `N`, so N processes (a Kubernetes Indexed
//! Job, or N shells) share a night's work.
//!
//! A student belongs to a partition by a stable hash of the user id text —
//! the same in every process, release and language: the first 8 bytes of
//! SHA-256 of the id's UTF-8 bytes, big-endian, top bit cleared (so it fits
//! a PostgreSQL `bigint` and is never negative). Partition `I` of `N` holds
//! the hashes `h` with `floor(h * N / 2^63) = I`: a contiguous range
//! ([`Partition::range`]), so a store that keeps the hash serves it from an
//! index. PostgreSQL computes the same value with `aidt_user_hash(text)`
//! (migration `20261207000001_partitions.sql`); a test compares both.

use sha2::{Digest, Sha256};

/// The option's name on the command line.
pub const OPTION: &str = "partition";
/// Which partition a pod of an Indexed Job runs: set by Kubernetes.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// How many partitions the Indexed Job has: set in its pod template.
pub const COUNT_ENV: &str = super::k8s::PARTITIONS_ENV;
/// More partitions than this is a typo, not a plan.
pub const MAX_PARTITIONS: u32 = 1024;

/// Partition `index` of `count` (`0 <= index < count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

/// A partition that cannot be: names where it came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartitionError {
    #[error("{source_name}: expected a partition I/N with 0 <= I < N <= {MAX_PARTITIONS}, got {value:?}")]
    Bad { source_name: String, value: String },
    #[error("{given} is set but {missing} is not: a partition needs both (pod i of an Indexed Job: {INDEX_ENV}=i, {COUNT_ENV}=N)")]
    Half {
        given: &'static str,
        missing: &'static str,
    },
}

impl Partition {
    pub fn new(index: u32, count: u32) -> Option<Self> {
        ((1..=MAX_PARTITIONS).contains(&count) && index < count).then_some(Self { index, count })
    }

    /// Parses `I/N` (`--partition 2/4`).
    pub fn parse(text: &str) -> Option<Self> {
        let (i, n) = text.trim().split_once('/')?;
        Self::new(i.trim().parse().ok()?, n.trim().parse().ok()?)
    }

    /// The partition an Indexed Job's pod runs: `JOB_COMPLETION_INDEX` of
    /// `AIDT_PARTITIONS`, both or neither (`None`: unpartitioned).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, PartitionError> {
        let (index, count) = (var(INDEX_ENV), var(COUNT_ENV));
        let bad = |name: &str, value: &str| PartitionError::Bad {
            source_name: name.to_string(),
            value: value.to_string(),
        };
        match (index, count) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(PartitionError::Half {
                given: INDEX_ENV,
                missing: COUNT_ENV,
            }),
            (None, Some(_)) => Err(PartitionError::Half {
                given: COUNT_ENV,
                missing: INDEX_ENV,
            }),
            (Some(i), Some(n)) => {
                let count: u32 = n
                    .trim()
                    .parse()
                    .ok()
                    .filter(|c| (1..=MAX_PARTITIONS).contains(c))
                    .ok_or_else(|| bad(COUNT_ENV, &n))?;
                let index: u32 = i
                    .trim()
                    .parse()
                    .ok()
                    .filter(|i| *i < count)
                    .ok_or_else(|| bad(INDEX_ENV, &i))?;
                Ok(Some(Self { index, count }))
            }
        }
    }

    /// Whether a student with this [`user_hash`] is ours.
    pub fn contains_hash(&self, hash: i64) -> bool {
        partition_of(hash, self.count) == self.index
    }

    /// Whether this user id is ours.
    pub fn contains(&self, user_id: &str) -> bool {
        self.contains_hash(user_hash(user_id))
    }

    /// The hashes of this partition: `lo <= h` and, when `hi` is `Some`,
    /// `h < hi` (the last partition runs to the top of the range).
    pub fn range(&self) -> (i64, Option<i64>) {
        let lo = first_hash(self.index, self.count);
        let hi = (self.index + 1 < self.count).then(|| first_hash(self.index + 1, self.count));
        (lo, hi)
    }

    /// `I/N`, as given and as recorded in the history.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A SQL condition that holds for the rows of `partition`'s students:
/// `user_id_text` is an expression giving the user id as text in the same
/// form the xAPI side hashes (`x.user_id::text`: lowercase, hyphenated).
/// `TRUE` when unpartitioned. The bounds are inlined — they are numbers
/// computed here, never input — so the planner sees constants (an
/// expression index on `aidt_user_hash(...)` can serve them). A row whose
/// user id is NULL belongs to no partition (`aidt_user_hash` is STRICT).
pub fn sql_condition(partition: Option<Partition>, user_id_text: &str) -> String {
    let Some(p) = partition else {
        return "TRUE".to_string();
    };
    let hash = format!("aidt_user_hash({user_id_text})");
    match p.range() {
        (lo, Some(hi)) => format!("({hash} >= {lo} AND {hash} < {hi})"),
        (lo, None) => format!("{hash} >= {lo}"),
    }
}

/// The partition hash of a user id (see the module's header).
pub fn user_hash(user_id: &str) -> i64 {
    let digest = Sha256::digest(user_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) & (u64::MAX >> 1)) as i64
}

/// `floor(hash * count / 2^63)`.
pub fn partition_of(hash: i64, count: u32) -> u32 {
    ((hash as u128 * count as u128) >> 63) as u32
}

/// The smallest hash of partition `index` of `count`: `ceil(index * 2^63 / count)`.
fn first_hash(index: u32, count: u32) -> i64 {
    let top = 1u128 << 63;
    ((index as u128 * top).div_ceil(count as u128)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i_of_n_and_refuses_the_rest() {
        assert_eq!(
            Partition::parse("2/4"),
            Some(Partition { index: 2, count: 4 })
        );
        assert_eq!(
            Partition::parse("0/1"),
            Some(Partition { index: 0, count: 1 })
        );
        for bad in ["4/4", "1/0", "-1/4", "a/4", "2", "2/4/1", "", "0/5000"] {
            assert_eq!(Partition::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_environment_needs_both_variables_and_names_the_bad_one() {
        fn env(
            i: Option<&'static str>,
            n: Option<&'static str>,
        ) -> impl Fn(&str) -> Option<String> {
            move |name: &str| match name {
                INDEX_ENV => i.map(str::to_string),
                COUNT_ENV => n.map(str::to_string),
                _ => None,
            }
        }
        assert_eq!(Partition::from_env(env(None, None)), Ok(None));
        assert_eq!(
            Partition::from_env(env(Some("3"), Some("4"))),
            Ok(Partition::new(3, 4))
        );
        let half = Partition::from_env(env(Some("3"), None))
            .unwrap_err()
            .to_string();
        assert!(half.contains(COUNT_ENV), "{half}");
        let bad = Partition::from_env(env(Some("4"), Some("4")))
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with(INDEX_ENV), "{bad}");
        let bad = Partition::from_env(env(Some("0"), Some("zero")))
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with(COUNT_ENV), "{bad}");
    }

    #[test]
    fn ranges_agree_with_partition_of_at_their_edges() {
        for count in [1u32, 2, 3, 4, 7, 16, 1000] {
            let mut expected_lo = 0i64;
            for index in 0..count {
                let p = Partition::new(index, count).unwrap();
                let (lo, hi) = p.range();
                assert_eq!(lo, expected_lo);
                assert!(p.contains_hash(lo));
                if lo > 0 {
                    assert_eq!(partition_of(lo - 1, count), index - 1);
                }
                match hi {
                    Some(hi) => {
                        assert!(!p.contains_hash(hi) && p.contains_hash(hi - 1));
                        expected_lo = hi;
                    }
                    None => {
                        assert_eq!(index, count - 1);
                        assert!(p.contains_hash(i64::MAX));
                    }
                }
            }
        }
    }

    #[test]
    fn the_sql_condition_is_the_range_or_true() {
        assert_eq!(sql_condition(None, "x.user_id::text"), "TRUE");
        let first = sql_condition(Partition::new(0, 2), "u");
        assert_eq!(
            first,
            format!(
                "(aidt_user_hash(u) >= 0 AND aidt_user_hash(u) < {})",
                1u64 << 62
            )
        );
        let last = sql_condition(Partition::new(1, 2), "u");
        assert_eq!(last, format!("aidt_user_hash(u) >= {}", 1u64 << 62));
    }

    #[test]
    fn the_hash_is_sha256_big_endian_without_the_top_bit() {
        // sha256("abc") = ba7816bf 8f01cfea ...; 0xba7816bf8f01cfea & 0x7fff... = 0x3a7816bf8f01cfea
        assert_eq!(user_hash("abc"), 0x3a78_16bf_8f01_cfea);
        assert!(user_hash("") >= 0);
    }
}
