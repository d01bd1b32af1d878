//! One document of the LRS's `statements`, decoded for aggregation — or
//! the reason it cannot be, named by its `_id` alone.
//!
//! The LRS writes `{_id, statement, user_id, partner_id, timestamp, stored,
//! voided}` (data-contract.md), but real collections hold documents no job
//! can use: a `user_id` stored as binary data or a number, a string that is
//! not UTF-8, a statement without an actor, a `timestamp` or `stored` that is
//! missing or not a date. Such a document is [`Undecodable`]: the caller
//! skips and counts it, and reports its `_id`. No reason ever carries a value
//! of the document (it may hold a raw student id).

use mongodb::bson::{Bson, Document, RawBsonRef, RawDocument};
use serde_json::Value;

use crate::xapi;

/// A source statement the aggregation can use.
#[derive(Debug, Clone)]
pub struct Source {
    /// The document's `_id` ([`id_of`]): the order within a student.
    pub id: String,
    pub user_id: String,
    pub partner_id: String,
    /// `timestamp`, milliseconds since the epoch: the statement's time,
    /// which places it in its learning day.
    pub timestamp: i64,
    /// `stored`, milliseconds since the epoch: when the LRS stored it, the
    /// clock of "new since the last run".
    pub stored: i64,
    /// `voided: true` (the LRS marks what a voiding statement voided).
    pub voided: bool,
    /// The xAPI statement, extension keys decoded.
    pub statement: Value,
}

/// What a decodable source statement is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A learning record, aggregated.
    Learning,
    /// A voiding statement: voids the statement with this xAPI id.
    Voiding { target: String },
}

impl Source {
    pub fn kind(&self) -> Kind {
        let verb = self.statement.pointer("/verb/id").and_then(Value::as_str);
        if verb != Some(xapi::VERB_VOIDED) {
            return Kind::Learning;
        }
        let target = self
            .statement
            .pointer("/object/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Kind::Voiding {
            target: target.to_string(),
        }
    }

    /// The statement's xAPI `id`, if it has one.
    pub fn statement_id(&self) -> Option<&str> {
        self.statement.get("id").and_then(Value::as_str)
    }

    pub fn verb_id(&self) -> &str {
        self.statement
            .pointer("/verb/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn object_id(&self) -> &str {
        self.statement
            .pointer("/object/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The learning day (Asia/Seoul) of the statement.
    pub fn day(&self) -> chrono::NaiveDate {
        day_of(self.timestamp)
    }
}

/// The Asia/Seoul date of an instant in milliseconds since the epoch.
pub fn day_of(millis: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .with_timezone(&crate::time::seoul())
        .date_naive()
}

/// A document that cannot be aggregated: its `_id` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// The `_id` (an ObjectId's hex, or the value's Extended JSON).
    pub id: String,
    pub reason: &'static str,
}

/// Decodes a raw `statements` document.
pub fn decode(raw: &RawDocument) -> Result<Source, Undecodable> {
    let bad = |reason| Undecodable {
        id: id_of(raw),
        reason,
    };
    let user_id = match raw.get("user_id") {
        Ok(Some(RawBsonRef::String(s))) if !s.is_empty() => s.to_string(),
        Ok(Some(RawBsonRef::String(_))) => return Err(bad("user_id is empty")),
        Ok(None) => return Err(bad("user_id is missing")),
        Ok(Some(RawBsonRef::Binary(_))) => return Err(bad("user_id is binary data, not a string")),
        Ok(Some(_)) => return Err(bad("user_id is not a string")),
        Err(_) => return Err(bad("user_id is not valid UTF-8")),
    };
    let partner_id = match raw.get("partner_id") {
        Ok(Some(RawBsonRef::String(s))) => s.to_string(),
        Ok(None) => String::new(),
        Ok(Some(_)) => return Err(bad("partner_id is not a string")),
        Err(_) => return Err(bad("partner_id is not valid UTF-8")),
    };
    let timestamp = match raw.get("timestamp") {
        Ok(Some(RawBsonRef::DateTime(d))) => d.timestamp_millis(),
        Ok(None) => return Err(bad("timestamp is missing")),
        _ => return Err(bad("timestamp is not a date")),
    };
    let stored = match raw.get("stored") {
        Ok(Some(RawBsonRef::DateTime(d))) => d.timestamp_millis(),
        Ok(None) => return Err(bad("stored is missing")),
        _ => return Err(bad("stored is not a date")),
    };
    let voided = matches!(raw.get("voided"), Ok(Some(RawBsonRef::Boolean(true))));
    let statement = match raw.get("statement") {
        Ok(Some(RawBsonRef::Document(d))) => match statement_json(d) {
            Some(v) => xapi::decode_keys(v),
            None => return Err(bad("statement is not valid BSON or UTF-8")),
        },
        Ok(None) => return Err(bad("statement is missing")),
        _ => return Err(bad("statement is not a document")),
    };
    if statement.get("actor").is_none_or(Value::is_null) {
        return Err(bad("statement has no actor"));
    }
    Ok(Source {
        id: id_of(raw),
        user_id,
        partner_id,
        timestamp,
        stored,
        voided,
        statement,
    })
}

/// The `_id` as a report names it: an ObjectId's hex, else its Extended
/// JSON (a missing or unreadable `_id` is said so).
pub fn id_of(raw: &RawDocument) -> String {
    match raw.get("_id") {
        Ok(Some(RawBsonRef::ObjectId(oid))) => oid.to_hex(),
        Ok(Some(other)) => match other.to_raw_bson().try_into() {
            Ok(bson) => Bson::into_relaxed_extjson(bson).to_string(),
            Err(_) => "(unreadable _id)".to_string(),
        },
        Ok(None) => "(no _id)".to_string(),
        Err(_) => "(unreadable _id)".to_string(),
    }
}

/// A source statement as JSON, deserialized from its bytes. JSON's own
/// types (strings, numbers, booleans, arrays, objects) come out as the
/// driver's relaxed Extended JSON gives them; a statement holding a BSON
/// type plain JSON cannot take (binary data) takes the driver's path.
/// `None` when the bytes are not valid BSON (a string that is not UTF-8).
pub fn statement_json(raw: &RawDocument) -> Option<Value> {
    match mongodb::bson::from_slice::<Value>(raw.as_bytes()) {
        Ok(v) => Some(v),
        Err(_) => {
            let doc = Document::try_from(raw).ok()?;
            Some(Bson::Document(doc).into_relaxed_extjson())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{rawdoc, spec::BinarySubtype, Binary, DateTime};

    fn good() -> mongodb::bson::RawDocumentBuf {
        rawdoc! {
            "_id": mongodb::bson::oid::ObjectId::parse_str("65f000000000000000000001").unwrap(),
            "user_id": "u-1", "partner_id": "p",
            "timestamp": DateTime::from_millis(1_000), "stored": DateTime::from_millis(2_000),
            "voided": false,
            "statement": { "actor": { "name": "u-1" }, "verb": { "id": "v" }, "object": { "id": "o" } },
        }
    }

    #[test]
    fn a_good_document_decodes() {
        let s = decode(&good()).unwrap();
        assert_eq!((s.timestamp, s.stored, s.voided), (1_000, 2_000, false));
        assert_eq!((s.verb_id(), s.object_id()), ("v", "o"));
        assert_eq!(s.kind(), Kind::Learning);
    }

    #[test]
    fn bad_documents_are_named_by_their_id_and_never_by_their_values() {
        let cases: Vec<(&str, mongodb::bson::RawBson, &str)> = vec![
            (
                "user_id",
                mongodb::bson::RawBson::Binary(Binary {
                    subtype: BinarySubtype::Uuid,
                    bytes: vec![7; 16],
                }),
                "user_id is binary data, not a string",
            ),
            ("user_id", 42.into(), "user_id is not a string"),
            (
                "timestamp",
                "2026-03-05T10:00:00".into(),
                "timestamp is not a date",
            ),
            (
                "stored",
                mongodb::bson::RawBson::Null,
                "stored is not a date",
            ),
        ];
        for (key, value, reason) in cases {
            let mut doc = mongodb::bson::RawDocumentBuf::new();
            for (k, v) in good().iter().map(Result::unwrap) {
                if k == key {
                    doc.append(k, value.clone());
                } else {
                    doc.append(k, v.to_raw_bson());
                }
            }
            let err = decode(&doc).unwrap_err();
            assert_eq!(
                err,
                Undecodable {
                    id: "65f000000000000000000001".into(),
                    reason
                }
            );
        }
        let mut no_actor = good().to_document().unwrap();
        no_actor
            .get_document_mut("statement")
            .unwrap()
            .remove("actor");
        let raw = mongodb::bson::RawDocumentBuf::from_document(&no_actor).unwrap();
        assert_eq!(decode(&raw).unwrap_err().reason, "statement has no actor");
    }
}
