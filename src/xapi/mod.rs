//! xAPI statements of the AIDT profile (keris-api.md, "Statement profile"):
//! the checks KERIS applies, the deterministic statement id, ISO-8601
//! durations, and the stored-key encoding of `lrs` documents.
//!
//! Statements are handled as `serde_json::Value`. xAPI extension keys are
//! IRIs full of dots. In MongoDB documents they come two ways, and readers
//! ([`decode_keys`]) accept both: with every `.` written as
//! [`crate::contract::STORED_DOT`] (`&46;`, Learning Locker's convention,
//! from LRSs written for servers before MongoDB 5 that refused dots in keys),
//! or with the dots as they are (legal since MongoDB 5.0, what an LRS on
//! MongoDB 6/7 may well write). What this batch writes itself
//! (`keris_batch_data.statement`) is encoded ([`encode_keys`]), see there.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::contract::STORED_DOT;

pub const PROFILE_BASE: &str = "http://aidtbook.kr/xapi/profiles";
pub const EXT_PARTNER_ID: &str =
    "http://aidtbook.kr/xapi/profiles/cmn/1.0/contexts/extensions/partner-id";
pub const EXT_CURRICULUM_STANDARD: &str =
    "http://aidtbook.kr/xapi/profiles/assessment/1.0/results/extensions/curriculum-standard";

/// The profile's areas and their verbs (keris-api.md).
pub const AREA_VERBS: &[(&str, &[&str])] = &[
    ("media", &["played"]),
    ("assessment", &["submitted"]),
    ("assignment", &["gave", "finished"]),
    ("navigation", &["viewed", "read", "did", "learned"]),
    ("objective", &["set"]),
    ("query", &["searched", "asked"]),
    ("social-learning", &["participated"]),
    ("survey", &["submitted"]),
    ("annotation", &["made"]),
    ("teaching", &["gave", "reorganized"]),
];

/// Why a statement fails the profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("verb outside the profile: {0}")]
    UnknownVerb(String),
    #[error("timestamp without offset or not RFC 3339: {0}")]
    BadTimestamp(String),
    #[error("timestamp in the future: {0}")]
    FutureTimestamp(String),
    #[error("partner-id extension missing")]
    MissingPartnerId,
    #[error("partner-id extension differs from the partner")]
    PartnerMismatch,
}

impl ProfileError {
    /// A short stable code, for `err_code` and the reasons histogram.
    pub fn code(&self) -> &'static str {
        match self {
            ProfileError::NotAnObject => "NOT_OBJECT",
            ProfileError::Missing(_) => "MISSING_FIELD",
            ProfileError::UnknownVerb(_) => "UNKNOWN_VERB",
            ProfileError::BadTimestamp(_) => "BAD_TIMESTAMP",
            ProfileError::FutureTimestamp(_) => "FUTURE_TIMESTAMP",
            ProfileError::MissingPartnerId => "MISSING_PARTNER_ID",
            ProfileError::PartnerMismatch => "PARTNER_MISMATCH",
        }
    }
}

/// `(area, verb)` of a profile verb id
/// `http://aidtbook.kr/xapi/profiles/{area}/1.0/verbs/{verb}`, if it is in the table.
pub fn profile_verb(verb_id: &str) -> Option<(&'static str, &'static str)> {
    let rest = verb_id.strip_prefix(PROFILE_BASE)?.strip_prefix('/')?;
    let (area, rest) = rest.split_once('/')?;
    let verb = rest.strip_prefix("1.0/verbs/")?;
    AREA_VERBS
        .iter()
        .find(|(a, _)| *a == area)
        .and_then(|(a, verbs)| verbs.iter().find(|v| **v == verb).map(|v| (*a, *v)))
}

/// The area part of a verb id shaped like the profile's, even when the verb
/// is not in the table (for the `area` field of invalid statements).
pub fn area_of(verb_id: &str) -> Option<&str> {
    verb_id
        .strip_prefix(PROFILE_BASE)?
        .strip_prefix('/')?
        .split('/')
        .next()
}

/// The partner-id context extension of a statement (decoded keys).
pub fn partner_id(statement: &Value) -> Option<&str> {
    statement
        .pointer("/context/extensions")?
        .get(EXT_PARTNER_ID)?
        .as_str()
}

/// The profile checks KERIS applies (keris-api.md): a JSON object with
/// actor, verb, object and timestamp; a verb of the table; a timestamp with
/// offset, not after `now`; the partner-id extension present and, when
/// `partner` is given, equal to it.
pub fn validate_at(
    statement: &Value,
    partner: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), ProfileError> {
    let obj = statement.as_object().ok_or(ProfileError::NotAnObject)?;
    for field in ["actor", "verb", "object", "timestamp"] {
        if obj.get(field).is_none_or(Value::is_null) {
            return Err(ProfileError::Missing(match field {
                "actor" => "actor",
                "verb" => "verb",
                "object" => "object",
                _ => "timestamp",
            }));
        }
    }
    let verb_id = obj["verb"]
        .get("id")
        .and_then(Value::as_str)
        .ok_or(ProfileError::Missing("verb.id"))?;
    profile_verb(verb_id).ok_or_else(|| ProfileError::UnknownVerb(verb_id.to_string()))?;
    let ts = obj["timestamp"]
        .as_str()
        .ok_or_else(|| ProfileError::BadTimestamp(obj["timestamp"].to_string()))?;
    let parsed =
        DateTime::parse_from_rfc3339(ts).map_err(|_| ProfileError::BadTimestamp(ts.to_string()))?;
    if parsed.with_timezone(&Utc) > now {
        return Err(ProfileError::FutureTimestamp(ts.to_string()));
    }
    let got = partner_id(statement).ok_or(ProfileError::MissingPartnerId)?;
    if let Some(expected) = partner {
        if !got.eq_ignore_ascii_case(expected) {
            return Err(ProfileError::PartnerMismatch);
        }
    }
    Ok(())
}

/// [`validate_at`] now, without a partner to compare to.
pub fn validate(statement: &Value) -> Result<(), ProfileError> {
    validate_at(statement, None, Utc::now())
}

/// The deterministic id of an aggregated statement: UUID v5 of
/// `"{date}|{user_id}|{verb_id}|{object_id}"` in `namespace`.
pub fn statement_id(
    namespace: &Uuid,
    date: chrono::NaiveDate,
    user_id: &str,
    verb_id: &str,
    object_id: &str,
) -> Uuid {
    Uuid::new_v5(
        namespace,
        format!("{date}|{user_id}|{verb_id}|{object_id}").as_bytes(),
    )
}

/// The xAPI verb of a voiding statement (its object a `StatementRef` to the
/// statement it voids): not a learning record.
pub const VERB_VOIDED: &str = "http://adlnet.gov/expapi/verbs/voided";

/// The deterministic id of a "late attempts" statement: the source
/// statements of one (day, student, verb, object) that the LRS stored in
/// `(stored_after, stored_until]` (milliseconds since the epoch), after the
/// group's statement was sent. UUID v5 of
/// `"{date}|{user_id}|{verb_id}|{object_id}|late|{after}|{until}"`: the
/// window is part of the name, so each window's statement has its own id
/// and a rerun over the same window rebuilds the same one.
pub fn late_statement_id(
    namespace: &Uuid,
    date: chrono::NaiveDate,
    user_id: &str,
    verb_id: &str,
    object_id: &str,
    stored_after: i64,
    stored_until: i64,
) -> Uuid {
    Uuid::new_v5(
        namespace,
        format!("{date}|{user_id}|{verb_id}|{object_id}|late|{stored_after}|{stored_until}")
            .as_bytes(),
    )
}

/// Whole seconds of an ISO-8601 duration (`PT90S`, `PT1M30S`, `P1DT2H`,
/// `PT1.5S` → 1); `None` when it is not one. Years and months are refused
/// (no fixed length).
pub fn parse_duration_secs(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut total = 0f64;
    let mut parse = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                num.push(if c == ',' { '.' } else { c });
            } else {
                let pos = units.iter().position(|(u, _)| *u == c)?;
                if pos < next_unit || num.is_empty() {
                    return None;
                }
                total += num.parse::<f64>().ok()? * units[pos].1;
                num.clear();
                next_unit = pos + 1;
            }
        }
        num.is_empty().then_some(())
    };
    parse(date, &[('W', 604_800.0), ('D', 86_400.0)])?;
    if let Some(time) = time {
        parse(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    Some(total.floor() as i64)
}

/// Renames, in place, every key `from` occurs in (`from` → `to`), at any
/// depth. Only an object holding such a key is rebuilt (its order kept);
/// everything else is left where it is — most keys of a statement have no
/// dot, and this runs for every statement read or written.
fn map_keys(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            if map.keys().any(|k| k.contains(from)) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| {
                        let k = if k.contains(from) {
                            k.replace(from, to)
                        } else {
                            k
                        };
                        (k, v)
                    })
                    .collect::<Map<_, _>>();
            }
            for v in map.values_mut() {
                map_keys(v, from, to);
            }
        }
        Value::Array(items) => {
            for v in items {
                map_keys(v, from, to);
            }
        }
        _ => {}
    }
}

/// Keys as stored → real keys: `&46;` back to `.`; keys that already carry
/// their dots (a MongoDB 5+ LRS) are left as they are.
pub fn decode_keys(mut value: Value) -> Value {
    map_keys(&mut value, STORED_DOT, ".");
    value
}

/// Real keys → stored keys (every `.` as `&46;`).
///
/// Why writes still encode although MongoDB 5+ stores dotted keys: MongoDB's
/// query and update language still reads a `.` in a path as a separator, so a
/// field whose name contains dots cannot be filtered, projected, `$set`,
/// indexed or `$jsonSchema`-validated by path (only `$getField`/`$setField` in aggregation reach it), and
/// the manual advises against such names. Encoded, every field of a stored
/// statement stays addressable (e.g. by an operator looking for a
/// partner-id), older servers and tools keep working, and documents already
/// written keep one format. The wire form is always decoded
/// ([`keris_statement_bytes`]).
pub fn encode_keys(mut value: Value) -> Value {
    map_keys(&mut value, ".", STORED_DOT);
    value
}

/// The wire bytes (UTF-8 JSON, real dotted keys) of a statement as stored in
/// `keris_batch_data.statement`.
pub fn keris_statement_bytes(stored: &mongodb::bson::Document) -> Vec<u8> {
    let json = mongodb::bson::Bson::Document(stored.clone()).into_relaxed_extjson();
    serde_json::to_vec(&decode_keys(json)).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "id": "6f1c1f5e-9f1b-5a4e-8d3f-000000000000",
            "actor": {"objectType": "Agent", "account": {"homePage": "https://x", "name": "u"}},
            "verb": {"id": "http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/submitted", "display": {"en-US": "submitted"}},
            "object": {"id": "https://x/item/1", "objectType": "Activity"},
            "timestamp": "2026-03-05T00:00:00.000+09:00",
            "context": {"platform": "p", "extensions": {EXT_PARTNER_ID: "P1"}}
        })
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("PT90S"), Some(90));
        assert_eq!(parse_duration_secs("PT1M30S"), Some(90));
        assert_eq!(parse_duration_secs("PT1H"), Some(3600));
        assert_eq!(parse_duration_secs("P1DT1S"), Some(86_401));
        assert_eq!(parse_duration_secs("PT1.7S"), Some(1));
        assert_eq!(parse_duration_secs("PT"), None);
        assert_eq!(parse_duration_secs("P"), None);
        assert_eq!(parse_duration_secs("90"), None);
        assert_eq!(parse_duration_secs("PT30S1M"), None);
        assert_eq!(parse_duration_secs("P1M"), None);
    }

    #[test]
    fn verbs() {
        assert_eq!(
            profile_verb("http://aidtbook.kr/xapi/profiles/media/1.0/verbs/played"),
            Some(("media", "played"))
        );
        assert_eq!(
            profile_verb("http://aidtbook.kr/xapi/profiles/media/1.0/verbs/viewed"),
            None
        );
        assert_eq!(
            profile_verb("http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/answered"),
            None
        );
        assert_eq!(
            area_of("http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/answered"),
            Some("assessment")
        );
    }

    #[test]
    fn validation() {
        let now = Utc::now();
        assert_eq!(validate_at(&good(), Some("p1"), now), Ok(()));
        assert_eq!(
            validate_at(&json!([1]), None, now),
            Err(ProfileError::NotAnObject)
        );
        let mut s = good();
        s.as_object_mut().unwrap().remove("object");
        assert_eq!(
            validate_at(&s, None, now),
            Err(ProfileError::Missing("object"))
        );
        let mut s = good();
        s["verb"]["id"] = json!("http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/answered");
        assert!(matches!(
            validate_at(&s, None, now),
            Err(ProfileError::UnknownVerb(_))
        ));
        let mut s = good();
        s["timestamp"] = json!("2026-03-05T00:00:00.000");
        assert!(matches!(
            validate_at(&s, None, now),
            Err(ProfileError::BadTimestamp(_))
        ));
        let mut s = good();
        s["timestamp"] = json!("2999-03-05T00:00:00.000+09:00");
        assert!(matches!(
            validate_at(&s, None, now),
            Err(ProfileError::FutureTimestamp(_))
        ));
        let mut s = good();
        s["context"]["extensions"] = json!({});
        assert_eq!(
            validate_at(&s, None, now),
            Err(ProfileError::MissingPartnerId)
        );
        assert_eq!(
            validate_at(&good(), Some("P2"), now),
            Err(ProfileError::PartnerMismatch)
        );
    }

    #[test]
    fn ids_are_deterministic() {
        let ns = Uuid::parse_str("2f9d6b8e-4c1a-4e57-9b3a-6a0d5c7e1f20").unwrap();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        let a = statement_id(&ns, d, "u", "v", "o");
        assert_eq!(a, statement_id(&ns, d, "u", "v", "o"));
        assert_ne!(a, statement_id(&ns, d, "u", "v", "o2"));
        assert_eq!(a.get_version_num(), 5);
        let late = late_statement_id(&ns, d, "u", "v", "o", 10, 20);
        assert_eq!(late, late_statement_id(&ns, d, "u", "v", "o", 10, 20));
        assert_ne!(late, late_statement_id(&ns, d, "u", "v", "o", 20, 30));
        assert_ne!(late, a);
    }

    #[test]
    fn keys_round_trip() {
        let stored = encode_keys(good());
        assert!(!stored
            .to_string()
            .contains("aidtbook.kr/xapi/profiles/cmn/1.0/contexts/extensions/partner-id\""));
        assert_eq!(decode_keys(stored.clone()), good());
        let doc = mongodb::bson::to_document(&stored).unwrap();
        let bytes = keris_statement_bytes(&doc);
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, good());
    }

    #[test]
    fn dotted_keys_as_a_mongodb_5_lrs_stores_them_are_read_as_they_are() {
        // keys with their dots, and one legacy-encoded key beside them
        let mut stored = good();
        stored["result"] = json!({"extensions": {
            EXT_CURRICULUM_STANDARD.replace('.', "&46;"): [{"id": "S1", "achievement-level": "A"}]
        }});
        let decoded = decode_keys(stored.clone());
        assert_eq!(decoded["context"]["extensions"][EXT_PARTNER_ID], "P1");
        assert_eq!(
            decoded["result"]["extensions"][EXT_CURRICULUM_STANDARD][0]["id"],
            "S1"
        );
        assert_eq!(partner_id(&decoded), Some("P1"));
        let doc = mongodb::bson::to_document(&stored).unwrap();
        let back: Value = serde_json::from_slice(&keris_statement_bytes(&doc)).unwrap();
        assert_eq!(back, decoded);
    }
}
