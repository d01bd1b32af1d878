//! Grouping source statements per (student, verb id, object id) and turning
//! each group into one KERIS statement ([`Output`]).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use super::source::Source;
use super::Report;
use crate::config::LrsAggregateSettings;
use crate::runtime::JobContext;
use crate::xapi::{self, ProfileError};

/// The combined source statements of one (student, verb, object) and day,
/// or of the part of them one document covers.
#[derive(Debug, Default)]
pub struct Group {
    verb: Value,
    object: Value,
    /// The partner-id of the output: the document's, or a foreign extension value.
    partner_ext: Option<String>,
    attempts: u64,
    duration: Option<i64>,
    /// (timestamp ms, raw score) of the latest scored attempt.
    score: Option<(i64, Value)>,
    completion: Option<bool>,
    success: Option<bool>,
    /// standard id → (timestamp ms, achievement level).
    standards: BTreeMap<String, (i64, Value)>,
}

impl Group {
    /// Adds one source statement of the group (whose document's partner is
    /// `partner_id`).
    pub fn add(&mut self, src: &Source, partner_id: &str) {
        let statement = &src.statement;
        let ts = src.timestamp;
        if self.attempts == 0 {
            self.verb = statement.get("verb").cloned().unwrap_or(Value::Null);
            self.object = statement.get("object").cloned().unwrap_or(Value::Null);
        }
        self.attempts += 1;
        match xapi::partner_id(statement) {
            Some(p) if !p.eq_ignore_ascii_case(partner_id) => {
                self.partner_ext = Some(p.to_string())
            }
            None if self.partner_ext.is_none() => self.partner_ext = Some(String::new()),
            _ => {}
        }
        let Some(result) = statement.get("result") else {
            return;
        };
        let duration = result.get("duration");
        if let Some(secs) = duration
            .and_then(Value::as_str)
            .and_then(xapi::parse_duration_secs)
            .or_else(|| duration.and_then(Value::as_i64))
        {
            self.duration = Some(self.duration.unwrap_or(0) + secs);
        }
        if let Some(raw) = result.pointer("/score/raw") {
            if self.score.as_ref().is_none_or(|(t, _)| *t <= ts) {
                self.score = Some((ts, raw.clone()));
            }
        }
        if let Some(b) = result.get("completion").and_then(Value::as_bool) {
            self.completion = Some(self.completion.unwrap_or(false) || b);
        }
        if let Some(b) = result.get("success").and_then(Value::as_bool) {
            self.success = Some(self.success.unwrap_or(false) || b);
        }
        let standards = result
            .pointer("/extensions")
            .and_then(|e| e.get(xapi::EXT_CURRICULUM_STANDARD));
        for entry in standards.and_then(Value::as_array).into_iter().flatten() {
            let (Some(id), Some(level)) = (
                entry.get("id").and_then(Value::as_str),
                entry.get("achievement-level"),
            ) else {
                continue;
            };
            if self.standards.get(id).is_none_or(|(t, _)| *t <= ts) {
                self.standards.insert(id.to_string(), (ts, level.clone()));
            }
        }
    }
}

/// Which source statements one stored document covers: those of its group
/// whose `stored` lies in `(after, until]` (milliseconds; no lower bound
/// for the group's first document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub after: Option<i64>,
    pub until: i64,
}

/// What names one KERIS statement: its group and the stored window it covers.
#[derive(Debug, Clone)]
pub struct Key<'a> {
    pub date: NaiveDate,
    pub user_id: &'a str,
    pub partner_id: &'a str,
    pub verb_id: &'a str,
    pub object_id: &'a str,
}

/// One aggregated statement, ready to write.
#[derive(Debug)]
pub struct Output {
    pub id: String,
    pub base_dt: NaiveDate,
    pub partner_id: String,
    pub user_id: String,
    pub area: String,
    pub attempts: u64,
    pub coverage: Coverage,
    pub statement: Value,
    pub error: Option<ProfileError>,
}

/// Groups the cursor's documents per student and turns each student's groups
/// into [`Output`]s: the groups' first documents, covering what was stored
/// up to [`Aggregator::stored_until`].
pub struct Aggregator {
    date: NaiveDate,
    settings: LrsAggregateSettings,
    now: chrono::DateTime<chrono::Utc>,
    /// The end of the stored window the outputs cover (ms).
    pub stored_until: i64,
    user: Option<(String, String)>,
    /// The last student seen, to catch a cursor that is not sorted by user.
    last_user: Option<String>,
    groups: HashMap<(String, String), Group>,
    pub pending: Vec<Output>,
    pub report: Report,
}

impl Aggregator {
    pub fn new(date: NaiveDate, settings: LrsAggregateSettings, _dry_run: bool) -> Self {
        Self {
            date,
            settings,
            now: chrono::Utc::now(),
            stored_until: i64::MAX,
            user: None,
            last_user: None,
            groups: HashMap::new(),
            pending: Vec::new(),
            report: Report::default(),
        }
    }

    /// Adds one source statement. Statements must come sorted by
    /// `user_id`: a student seen again after another one would get a
    /// second, partial aggregate written over the first, so that is refused
    /// (the message names no student: it ends in the run's history).
    pub fn add(&mut self, src: &Source) -> anyhow::Result<()> {
        if let Some(last) = &self.last_user {
            anyhow::ensure!(
                src.user_id >= *last,
                "the statements cursor is not sorted by user_id; nothing of the student is written"
            );
        }
        if self.last_user.as_deref() != Some(src.user_id.as_str()) {
            self.last_user = Some(src.user_id.clone());
        }
        if self.user.as_ref().is_some_and(|(u, _)| *u != src.user_id) {
            self.finish_user();
        }
        let partner = &self
            .user
            .get_or_insert_with(|| (src.user_id.clone(), src.partner_id.clone()))
            .1;
        let key = (src.verb_id().to_string(), src.object_id().to_string());
        self.groups.entry(key).or_default().add(src, partner);
        Ok(())
    }

    /// Turns the current student's groups into outputs.
    pub fn finish_user(&mut self) {
        let Some((user_id, partner_id)) = self.user.take() else {
            return;
        };
        let mut groups: Vec<_> = self.groups.drain().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let coverage = Coverage {
            after: None,
            until: self.stored_until,
        };
        for ((verb_id, object_id), group) in groups {
            let key = Key {
                date: self.date,
                user_id: &user_id,
                partner_id: &partner_id,
                verb_id: &verb_id,
                object_id: &object_id,
            };
            let id = first_id(&self.settings, &key);
            let out = output(&self.settings, self.now, &key, id, coverage, group);
            self.pending.push(out);
        }
    }

    /// Takes the pending outputs for writing and counts them in the report.
    pub fn take_batch(&mut self, ctx: &JobContext) -> Vec<Output> {
        let outputs = std::mem::take(&mut self.pending);
        self.report.count_outputs(ctx, &outputs);
        outputs
    }
}

/// The id of a group's first document: UUID v5 of `D|user|verb|object`.
pub fn first_id(settings: &LrsAggregateSettings, key: &Key) -> String {
    xapi::statement_id(
        &settings.id_namespace,
        key.date,
        key.user_id,
        key.verb_id,
        key.object_id,
    )
    .to_string()
}

/// The KERIS statement of a group (or of the part of it one window covers).
pub fn output(
    settings: &LrsAggregateSettings,
    now: chrono::DateTime<chrono::Utc>,
    key: &Key,
    id: String,
    coverage: Coverage,
    g: Group,
) -> Output {
    let area = xapi::area_of(key.verb_id).unwrap_or_default().to_string();
    let mut statement = Map::new();
    statement.insert("id".into(), json!(id));
    statement.insert(
        "actor".into(),
        json!({"objectType": "Agent", "account": {"homePage": settings.home_page, "name": key.user_id}}),
    );
    if !g.verb.is_null() {
        statement.insert("verb".into(), g.verb.clone());
    }
    if !g.object.is_null() {
        statement.insert("object".into(), g.object.clone());
    }
    statement.insert("result".into(), result_of(settings, &g));
    let partner_ext = match g.partner_ext {
        None => Some(key.partner_id.to_string()),
        Some(p) if p.is_empty() => None,
        Some(p) => Some(p),
    };
    let mut context_ext = Map::new();
    if let Some(p) = partner_ext {
        context_ext.insert(xapi::EXT_PARTNER_ID.into(), json!(p));
    }
    statement.insert(
        "context".into(),
        json!({"platform": settings.platform, "extensions": Value::Object(context_ext)}),
    );
    statement.insert(
        "timestamp".into(),
        json!(format!("{}T00:00:00.000+09:00", key.date)),
    );
    let statement = Value::Object(statement);
    let error = xapi::validate_at(&statement, Some(key.partner_id), now).err();
    Output {
        id,
        base_dt: key.date,
        partner_id: key.partner_id.to_string(),
        user_id: key.user_id.to_string(),
        area,
        attempts: g.attempts,
        coverage,
        statement,
        error,
    }
}

/// The `result` of a group's statement.
fn result_of(settings: &LrsAggregateSettings, g: &Group) -> Value {
    let mut result = Map::new();
    if let Some((_, raw)) = &g.score {
        result.insert("score".into(), json!({ "raw": raw }));
    }
    if let Some(b) = g.success {
        result.insert("success".into(), json!(b));
    }
    if let Some(b) = g.completion {
        result.insert("completion".into(), json!(b));
    }
    if let Some(d) = g.duration {
        result.insert("duration".into(), json!(d));
    }
    let mut ext = Map::new();
    if !settings.attempts_extension.is_empty() {
        ext.insert(settings.attempts_extension.clone(), json!(g.attempts));
    }
    if !g.standards.is_empty() {
        let list: Vec<Value> = g
            .standards
            .iter()
            .map(|(id, (_, level))| json!({"id": id, "achievement-level": level}))
            .collect();
        ext.insert(xapi::EXT_CURRICULUM_STANDARD.into(), Value::Array(list));
    }
    result.insert("extensions".into(), Value::Object(ext));
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(user: &str) -> Source {
        Source {
            id: String::new(),
            user_id: user.into(),
            partner_id: "p".into(),
            timestamp: 0,
            stored: 0,
            voided: false,
            statement: json!({ "actor": {} }),
        }
    }

    #[test]
    fn a_student_seen_again_after_another_one_is_refused_without_naming_either() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        let mut agg = Aggregator::new(date, LrsAggregateSettings::default(), true);
        for user in ["a-student", "a-student", "b-student"] {
            agg.add(&src(user)).unwrap();
        }
        let err = agg.add(&src("a-student")).unwrap_err().to_string();
        assert!(err.contains("not sorted by user_id"), "{err}");
        assert!(!err.contains("student\""), "{err}");
    }
}
