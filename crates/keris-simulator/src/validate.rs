//! What the simulator checks: one xAPI statement per chunk (light enough for
//! 50k statements/s) and the dashboard bodies.

use std::borrow::Cow;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use aidt_batch::keris::types::Api;
use aidt_batch::keris::{is_curriculum_id, PARTNER_ID_EXTENSION};

/// A statement that passed the profile checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValidStatement {
    /// The statement id, when it has one.
    pub id: Option<u128>,
    /// Hash of the canonical JSON (key order and whitespace do not matter).
    pub hash: u64,
}

/// Allowed clock skew for "timestamp in the future".
const FUTURE_TOLERANCE_SECS: i64 = 1;

/// Checks one statement as KERIS would; `Err` is the `XAPI_VAL_ERR` message.
pub(crate) fn check_statement(
    bytes: &[u8],
    partner_id: &str,
    now: DateTime<Utc>,
) -> Result<ValidStatement, String> {
    let hash = canonical_hash(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let head: Head<'_> =
        serde_json::from_slice(bytes).map_err(|e| format!("not an xAPI statement: {e}"))?;
    let id = match &head.id {
        None => None,
        Some(id) => Some(
            Uuid::try_parse(id.as_ref())
                .map_err(|_| "id is not a UUID".to_string())?
                .as_u128(),
        ),
    };
    if !head.actor.is_some_and(|o| o.0) {
        return Err("actor missing or not an object".into());
    }
    let verb = head.verb.ok_or("verb missing")?;
    let verb_id = verb.id.ok_or("verb.id missing")?;
    if !verb_allowed(verb_id.as_ref()) {
        return Err(format!(
            "verb {:?} is not in the AIDT profile",
            verb_id.as_ref()
        ));
    }
    if !head.object.is_some_and(|o| o.0) {
        return Err("object missing or not an object".into());
    }
    let timestamp = head.timestamp.ok_or("timestamp missing")?;
    let t = DateTime::parse_from_rfc3339(timestamp.as_ref()).map_err(|_| {
        format!(
            "timestamp {:?} is not RFC 3339 with an offset",
            timestamp.as_ref()
        )
    })?;
    if t.with_timezone(&Utc) > now + chrono::Duration::seconds(FUTURE_TOLERANCE_SECS) {
        return Err(format!(
            "timestamp {:?} is in the future",
            timestamp.as_ref()
        ));
    }
    if let Some(ext) = head.context.and_then(|c| c.extensions) {
        match ext.partner_id {
            PartnerExt::Absent => {}
            PartnerExt::NotString => return Err("partner-id extension is not a string".into()),
            PartnerExt::Value(p) if p.as_ref().eq_ignore_ascii_case(partner_id) => {}
            // Not echoing either value: both are Partner-IDs.
            PartnerExt::Value(_) => {
                return Err("partner-id extension differs from the transfer's partner".into())
            }
        }
    }
    Ok(ValidStatement { id, hash })
}

/// Whether `verb_id` is `http://aidtbook.kr/xapi/profiles/{area}/1.0/verbs/{verb}`
/// with a verb the profile allows for that area.
pub(crate) fn verb_allowed(verb_id: &str) -> bool {
    let Some(rest) = verb_id.strip_prefix("http://aidtbook.kr/xapi/profiles/") else {
        return false;
    };
    let Some((area, rest)) = rest.split_once('/') else {
        return false;
    };
    let Some(verb) = rest.strip_prefix("1.0/verbs/") else {
        return false;
    };
    let allowed: &[&str] = match area {
        "media" => &["played"],
        "assessment" => &["submitted"],
        "assignment" => &["gave", "finished"],
        "navigation" => &["viewed", "read", "did", "learned"],
        "objective" => &["set"],
        "query" => &["searched", "asked"],
        "social-learning" => &["participated"],
        "survey" => &["submitted"],
        "annotation" => &["made"],
        "teaching" => &["gave", "reorganized"],
        _ => return false,
    };
    allowed.contains(&verb)
}

/// The top-level fields the profile checks look at; everything else is
/// skipped without allocating.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    id: Option<Str<'a>>,
    #[serde(default)]
    actor: Option<IsObject>,
    #[serde(default, borrow)]
    verb: Option<Verb<'a>>,
    #[serde(default)]
    object: Option<IsObject>,
    #[serde(default, borrow)]
    timestamp: Option<Str<'a>>,
    #[serde(default, borrow)]
    context: Option<Context<'a>>,
}

#[derive(Deserialize)]
struct Verb<'a> {
    #[serde(default, borrow)]
    id: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Context<'a> {
    #[serde(default, borrow)]
    extensions: Option<Extensions<'a>>,
}

/// A string, borrowed from the input unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Whether a value is a JSON object (skipped, not kept).
struct IsObject(bool);

impl<'de> Deserialize<'de> for IsObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IsObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsObject(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsObject, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsObject(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_unit<E>(self) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
        }
        d.deserialize_any(V)
    }
}

enum PartnerExt<'a> {
    Absent,
    NotString,
    Value(Str<'a>),
}

/// `context.extensions`, keeping only the partner-id extension.
struct Extensions<'a> {
    partner_id: PartnerExt<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Extensions<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Extensions<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of extensions")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut partner_id = PartnerExt::Absent;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    if key.as_ref() == PARTNER_ID_EXTENSION {
                        partner_id = match map.next_value::<Value>()? {
                            Value::String(s) => PartnerExt::Value(Str(Cow::Owned(s))),
                            _ => PartnerExt::NotString,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Extensions { partner_id })
            }
        }
        d.deserialize_map(V)
    }
}

/// A hash of the canonical form of a JSON document: object members are
/// combined order-independently, so `{"a":1,"b":2}` and `{ "b":2, "a":1 }`
/// hash alike, while arrays keep their order. Computed while parsing,
/// without building a `Value`.
pub(crate) fn canonical_hash(bytes: &[u8]) -> Result<u64, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Canonical(hash) = Canonical::deserialize(&mut de)?;
    de.end()?;
    Ok(hash)
}

struct Canonical(u64);

fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl<'de> Deserialize<'de> for Canonical {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CanonicalVisitor)
    }
}

struct CanonicalVisitor;

impl<'de> Visitor<'de> for CanonicalVisitor {
    type Value = Canonical;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Canonical, E> {
        Ok(Canonical(hash_of(0u8)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Canonical, E> {
        Ok(Canonical(hash_of((1u8, v))))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Canonical, E> {
        Ok(Canonical(hash_of((2u8, v as i128))))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Canonical, E> {
        Ok(Canonical(hash_of((2u8, v as i128))))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Canonical, E> {
        Ok(Canonical(hash_of((3u8, v.to_bits()))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Canonical, E> {
        Ok(Canonical(hash_of((4u8, v))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Canonical, A::Error> {
        let mut h = DefaultHasher::new();
        5u8.hash(&mut h);
        while let Some(Canonical(item)) = seq.next_element()? {
            h.write_u64(item);
        }
        Ok(Canonical(h.finish()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Canonical, A::Error> {
        let mut sum = 0u64;
        let mut count = 0u64;
        while let Some(key) = map.next_key_seed(KeyHash)? {
            let Canonical(value) = map.next_value()?;
            sum = sum.wrapping_add(hash_of((key, value)));
            count += 1;
        }
        Ok(Canonical(hash_of((6u8, sum, count))))
    }
}

/// Hashes an object key without allocating it.
struct KeyHash;

impl<'de> DeserializeSeed<'de> for KeyHash {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyHash {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<u64, E> {
        Ok(hash_of(v))
    }
}

/// Checks a dashboard body (API-001..005); `Err` is the `40001` message.
/// Returns the body and its user id.
pub(crate) fn check_dashboard(api: Api, body: &[u8]) -> Result<(Value, Uuid), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = value.as_object().ok_or("body is not a JSON object")?;
    let field = |name: &str| obj.get(name).ok_or_else(|| format!("{name} missing"));
    let string = |name: &str| {
        field(name)?
            .as_str()
            .ok_or_else(|| format!("{name} is not a string"))
    };
    let number = |name: &str| {
        let n = field(name)?
            .as_f64()
            .ok_or_else(|| format!("{name} is not a number"))?;
        if (0.0..=100.0).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{name} {n} is outside 0–100"))
        }
    };

    let token = field("access_token")?
        .as_object()
        .ok_or("access_token is not an object")?;
    if token
        .get("token")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("access_token.token missing or empty".into());
    }
    if !token.get("access_id").is_some_and(Value::is_string) {
        return Err("access_token.access_id missing or not a string".into());
    }
    let user_id =
        Uuid::try_parse(string("user_id")?).map_err(|_| "user_id is not a UUID".to_string())?;
    let ts = string("timestamp")?;
    DateTime::parse_from_rfc3339(ts)
        .map_err(|_| format!("timestamp {ts:?} is not RFC 3339 with an offset"))?;

    match api {
        Api::Initialized | Api::Terminated => {
            if string("lecture_code")?.is_empty() {
                return Err("lecture_code is empty".into());
            }
            if api == Api::Terminated {
                field("duration")?
                    .as_u64()
                    .ok_or("duration is not a whole number of seconds")?;
            }
        }
        Api::CurriculumProgress | Api::CurriculumComplete | Api::CurriculumScore => {
            let curriculum = string("curriculum")?;
            if !is_curriculum_id(curriculum) {
                return Err(format!(
                    "curriculum {curriculum:?} is not a standard-system id"
                ));
            }
            match api {
                Api::CurriculumProgress => {
                    number("percent")?;
                }
                Api::CurriculumScore => {
                    number("score")?;
                    let level = string("achievement_level")?;
                    if !matches!(level, "A" | "B" | "C" | "D" | "E") {
                        return Err(format!("achievement_level {level:?} is not A–E"));
                    }
                }
                _ => {}
            }
        }
        _ => unreachable!("not a dashboard call"),
    }
    Ok((value, user_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTNER: &str = "11111111-2222-4333-8444-555555555555";

    fn statement(overrides: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v = serde_json::json!({
            "id": "0c9ac7a4-1b0e-5f35-8f7c-6d2f1c3f8a01",
            "timestamp": "2026-03-05T00:00:00.000+09:00",
            "actor": {"objectType": "Agent", "account": {"homePage": "https://vendor.example", "name": "u-1"}},
            "verb": {"id": "http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/submitted", "display": {"ko-KR": "제출"}},
            "object": {"id": "https://vendor.example/q/1", "objectType": "Activity"},
            "context": {"platform": "vendor", "extensions": {PARTNER_ID_EXTENSION: PARTNER}}
        });
        overrides(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn check(bytes: &[u8]) -> Result<ValidStatement, String> {
        check_statement(bytes, PARTNER, Utc::now())
    }

    #[test]
    fn a_profile_statement_passes() {
        let ok = check(&statement(|_| {})).unwrap();
        assert!(ok.id.is_some());
        // Partner-ID compared case-insensitively; missing extension is fine.
        assert!(check_statement(&statement(|_| {}), &PARTNER.to_uppercase(), Utc::now()).is_ok());
        assert!(check(&statement(
            |v| v["context"] = serde_json::json!({"platform": "x"})
        ))
        .is_ok());
        assert_eq!(
            check(&statement(|v| v
                .as_object_mut()
                .unwrap()
                .remove("id")
                .map(drop)
                .unwrap()))
            .unwrap()
            .id,
            None
        );
    }

    #[test]
    fn the_rejections_of_the_spec_are_rejected() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not JSON", b"{\"id\":".to_vec()),
            ("two values", b"{} {}".to_vec()),
            (
                "no actor",
                statement(|v| drop(v.as_object_mut().unwrap().remove("actor"))),
            ),
            ("actor not object", statement(|v| v["actor"] = "x".into())),
            (
                "no verb",
                statement(|v| drop(v.as_object_mut().unwrap().remove("verb"))),
            ),
            (
                "no object",
                statement(|v| drop(v.as_object_mut().unwrap().remove("object"))),
            ),
            (
                "no timestamp",
                statement(|v| drop(v.as_object_mut().unwrap().remove("timestamp"))),
            ),
            (
                "verb of other area",
                statement(|v| {
                    v["verb"]["id"] =
                        "http://aidtbook.kr/xapi/profiles/media/1.0/verbs/submitted".into()
                }),
            ),
            (
                "unknown area",
                statement(|v| {
                    v["verb"]["id"] = "http://aidtbook.kr/xapi/profiles/chat/1.0/verbs/said".into()
                }),
            ),
            (
                "adl verb",
                statement(|v| v["verb"]["id"] = "http://adlnet.gov/expapi/verbs/answered".into()),
            ),
            (
                "no offset",
                statement(|v| v["timestamp"] = "2026-03-05T00:00:00.000".into()),
            ),
            (
                "future",
                statement(|v| v["timestamp"] = "2999-01-01T00:00:00.000+09:00".into()),
            ),
            (
                "other partner",
                statement(|v| {
                    v["context"]["extensions"][PARTNER_ID_EXTENSION] =
                        "99999999-2222-4333-8444-555555555555".into()
                }),
            ),
            ("bad id", statement(|v| v["id"] = "not-a-uuid".into())),
        ];
        for (name, bytes) in cases {
            let err = check(&bytes).expect_err(name);
            assert!(
                !err.contains(PARTNER),
                "{name}: message leaks the Partner-ID: {err}"
            );
        }
    }

    #[test]
    fn every_verb_of_the_profile_table_is_allowed() {
        for (area, verbs) in [
            ("media", &["played"][..]),
            ("assessment", &["submitted"]),
            ("assignment", &["gave", "finished"]),
            ("navigation", &["viewed", "read", "did", "learned"]),
            ("objective", &["set"]),
            ("query", &["searched", "asked"]),
            ("social-learning", &["participated"]),
            ("survey", &["submitted"]),
            ("annotation", &["made"]),
            ("teaching", &["gave", "reorganized"]),
        ] {
            for verb in verbs {
                assert!(verb_allowed(&format!(
                    "http://aidtbook.kr/xapi/profiles/{area}/1.0/verbs/{verb}"
                )));
            }
        }
        assert!(!verb_allowed(
            "http://aidtbook.kr/xapi/profiles/navigation/2.0/verbs/viewed"
        ));
    }

    #[test]
    fn canonical_hash_ignores_key_order_and_whitespace_only() {
        let a = canonical_hash(br#"{"a":1,"b":{"c":[1,2],"d":"x"}}"#).unwrap();
        let b = canonical_hash(b"{ \"b\": {\"d\":\"x\", \"c\":[1, 2]},\n \"a\":1 }").unwrap();
        assert_eq!(a, b);
        let escaped = canonical_hash(br#"{"a":1,"b":{"c":[1,2],"d":"\u0078"}}"#).unwrap();
        assert_eq!(a, escaped);
        for other in [
            br#"{"a":1,"b":{"c":[2,1],"d":"x"}}"#.as_slice(),
            br#"{"a":2,"b":{"c":[1,2],"d":"x"}}"#,
            br#"{"a":1,"b":{"c":[1,2],"d":"y"}}"#,
            br#"{"a":1,"b":{"c":[1,2],"e":"x"}}"#,
            br#"{"a":1,"b":{"c":[1,2],"d":"x","e":null}}"#,
            br#"{"a":"1","b":{"c":[1,2],"d":"x"}}"#,
        ] {
            assert_ne!(
                a,
                canonical_hash(other).unwrap(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn dashboard_bodies_are_checked_field_by_field() {
        let base = serde_json::json!({
            "access_token": {"token": "t", "access_id": "a"},
            "user_id": "0c9ac7a4-1b0e-4f35-8f7c-6d2f1c3f8a01",
            "timestamp": "2026-03-05T09:10:00.000+09:00",
            "lecture_code": "L1", "duration": 30,
            "curriculum": "E4MATA01B01C01", "percent": 50, "score": 95.5, "achievement_level": "A"
        });
        for api in [
            Api::Initialized,
            Api::Terminated,
            Api::CurriculumProgress,
            Api::CurriculumComplete,
            Api::CurriculumScore,
        ] {
            check_dashboard(api, &serde_json::to_vec(&base).unwrap()).unwrap();
        }
        let bad = |f: &dyn Fn(&mut Value), api: Api| {
            let mut v = base.clone();
            f(&mut v);
            check_dashboard(api, &serde_json::to_vec(&v).unwrap()).unwrap_err()
        };
        assert!(bad(&|v| v["user_id"] = "x".into(), Api::Initialized).contains("user_id"));
        assert!(bad(
            &|v| v["timestamp"] = "2026-03-05T09:10:00".into(),
            Api::Initialized
        )
        .contains("timestamp"));
        assert!(bad(&|v| v["access_token"] = "t".into(), Api::Initialized).contains("access_token"));
        assert!(bad(&|v| v["duration"] = (-1).into(), Api::Terminated).contains("duration"));
        assert!(bad(&|v| v["percent"] = 101.into(), Api::CurriculumProgress).contains("percent"));
        assert!(bad(&|v| v["score"] = (-0.5).into(), Api::CurriculumScore).contains("score"));
        assert!(bad(
            &|v| v["achievement_level"] = "F".into(),
            Api::CurriculumScore
        )
        .contains("achievement_level"));
        assert!(bad(
            &|v| v["curriculum"] = "E4MATB01".into(),
            Api::CurriculumComplete
        )
        .contains("curriculum"));
        assert!(check_dashboard(Api::Initialized, b"[]").is_err());
    }
}
