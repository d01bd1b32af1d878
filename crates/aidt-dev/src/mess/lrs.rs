//! The mess of the LRS's `statements`: the day moved from the latest
//! earlier one, late and voiding statements, deleted students' statements,
//! undecodable documents and the statement a proxy refuses.

use anyhow::Context as _;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::TryStreamExt as _;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document};
use mongodb::Collection;
use rand::rngs::StdRng;
use rand::Rng as _;
use uuid::Uuid;

use super::{sample, Student, MARKER};
use crate::seed::gen::{self, rfc3339_seoul, Day};
use crate::seed::statements::object_id;
use aidt_batch::context::AppContext;
use aidt_batch::time;
use aidt_batch::xapi;

/// Days before D that get late statements; those past the 7-day default
/// look-back are counted by LRS-01-001, never sent.
const LATE_DAYS: i64 = 10;
/// Late statements per earlier day; D−1 gets twice as many, one of them a
/// second copy of another (two late attempts of one group).
const LATE_PER_DAY: usize = 3;
/// Statements voided, of D−1 and of D each.
const VOIDED_PER_DAY: usize = 3;
/// Clean statements read as templates (the first by `_id`).
const TEMPLATES: i64 = 5_000;
/// Documents per `insert_many` of the moved day.
const BATCH: usize = 2_000;

/// The LRS's `statements` and the business date.
pub(super) struct Lrs {
    coll: Collection<Document>,
    day: Day,
    namespace: Uuid,
    partner_key: String,
}

impl Lrs {
    pub fn new(app: &AppContext, date: NaiveDate) -> Self {
        Self {
            coll: app.mongo.collection(aidt_batch::contract::STATEMENTS),
            day: Day::new(date),
            namespace: app.settings.jobs.lrs_aggregate.id_namespace,
            partner_key: crate::seed::stored_key(xapi::EXT_PARTNER_ID),
        }
    }

    /// Moves the latest earlier day's statements to D when D has none.
    pub async fn day(&self, rng: &mut StdRng) -> anyhow::Result<u64> {
        if self.count(within(self.day.date, self.day.date)).await? > 0 {
            return Ok(0);
        }
        let earlier = doc! { "timestamp": { "$lt": bson_date(self.day.start) }, MARKER: { "$exists": false } };
        let found = self
            .coll
            .find_one(earlier)
            .sort(doc! { "timestamp": -1 })
            .await
            .context("Failed to find the latest day of statements")?;
        let Some(ts) = found.and_then(|d| d.get_datetime("timestamp").ok().copied()) else {
            return Ok(0);
        };
        let from = time_of(ts).with_timezone(&time::seoul()).date_naive();
        let shift = Duration::days((self.day.date - from).num_days());
        let mut filter = within(from, from);
        filter.insert(MARKER, doc! { "$exists": false });
        let mut cursor = self
            .coll
            .find(filter)
            .sort(doc! { "_id": 1 })
            .await
            .context("Failed to read the statements of the latest day")?;
        let (mut batch, mut n) = (Vec::new(), 0);
        while let Some(d) = cursor
            .try_next()
            .await
            .context("Failed to read statements")?
        {
            batch.push(moved(&d, shift, rng));
            if batch.len() == BATCH {
                n += self.insert(std::mem::take(&mut batch)).await?;
            }
        }
        Ok(n + self.insert(batch).await?)
    }

    /// Voiding statements for statements of D−1 and of D of consenting
    /// students; the targets are marked `voided`, as the LRS does.
    pub async fn voiding(&self, rng: &mut StdRng, consenting: &[Student]) -> anyhow::Result<u64> {
        let mut docs = Vec::new();
        for date in [self.day.date - Duration::days(1), self.day.date] {
            let mine = self.templates(within(date, date), Some(consenting)).await?;
            for target in sample(rng, &mine, VOIDED_PER_DAY) {
                let id = target.get_document("statement")?.get_str("id")?.to_string();
                self.coll
                    .update_one(
                        doc! { "_id": target.get("_id").cloned() },
                        doc! { "$set": { "voided": true } },
                    )
                    .await
                    .context("Failed to mark a voided statement")?;
                docs.push(self.voiding_statement(rng, &target, &id)?);
            }
        }
        self.insert(docs).await
    }

    fn voiding_statement(
        &self,
        rng: &mut StdRng,
        target: &Document,
        target_id: &str,
    ) -> anyhow::Result<Document> {
        let mut d = target.clone();
        let at = self.day.at(0, 13, rng.gen_range(0..600));
        let statement = d.get_document_mut("statement")?;
        statement.insert("id", gen::uuid(rng).to_string());
        statement.insert(
            "verb",
            doc! { "id": xapi::VERB_VOIDED, "display": { "en-US": "voided" } },
        );
        statement.insert(
            "object",
            doc! { "objectType": "StatementRef", "id": target_id },
        );
        statement.remove("result");
        place(&mut d, rng, at, at + Duration::seconds(1));
        d.insert(MARKER, "voiding");
        Ok(d)
    }

    /// Late statements of the 10 days before D, stored during D.
    pub async fn late(&self, rng: &mut StdRng) -> anyhow::Result<u64> {
        let all = self.templates(doc! {}, None).await?;
        let mut docs = Vec::new();
        for k in 1..=LATE_DAYS {
            let date = self.day.date - Duration::days(k);
            let own = if k == 1 {
                self.templates(within(date, date), None).await?
            } else {
                Vec::new()
            };
            let pool = if own.is_empty() { &all } else { &own };
            let mut picked = sample(rng, pool, LATE_PER_DAY * if k == 1 { 2 } else { 1 });
            if k == 1 && picked.len() > 1 {
                picked.pop();
                picked.push(picked[0].clone());
            }
            for template in picked {
                let at = start_of(date) + time_of_day(&template)?;
                let stored = self.day.at(0, 4, rng.gen_range(0..16 * 60));
                docs.push(copy(&template, rng, at, stored, "late")?);
            }
        }
        self.insert(docs).await
    }

    /// Statements of D and D−1 of each of `students`, stored during D, and
    /// one with the first one's id stored as a BSON UUID.
    pub async fn deleted_students(
        &self,
        rng: &mut StdRng,
        students: &[Student],
    ) -> anyhow::Result<u64> {
        let all = self.templates(doc! {}, None).await?;
        let mut docs = Vec::new();
        for student in students {
            for (days_back, template) in [0, 0, 1].into_iter().zip(sample(rng, &all, 3)) {
                let date = self.day.date - Duration::days(days_back);
                let at = start_of(date) + time_of_day(&template)?;
                let stored = self.day.at(0, 6, rng.gen_range(0..14 * 60));
                let mut d = copy(&template, rng, at, stored, "deleted-student")?;
                self.move_to(&mut d, student)?;
                docs.push(d);
            }
        }
        if let (Some(student), Some(mut d)) = (students.first(), docs.first().cloned()) {
            d.insert("_id", object_id(rng, self.day.at(0, 7, 0)));
            d.insert("user_id", binary_uuid(student.user_id));
            d.get_document_mut("statement")?
                .insert("id", gen::uuid(rng).to_string());
            docs.push(d);
        }
        self.insert(docs).await
    }

    /// Documents no job can read: `user_id` as a BSON UUID or a number, a
    /// statement without an actor.
    pub async fn undecodable(
        &self,
        rng: &mut StdRng,
        consenting: &[Student],
    ) -> anyhow::Result<u64> {
        let all = self.templates(doc! {}, None).await?;
        let mut docs = Vec::new();
        for (i, template) in sample(rng, &all, 3).into_iter().enumerate() {
            let at = self.day.at(0, 10 + i as i64, rng.gen_range(0..60));
            let mut d = copy(&template, rng, at, at + Duration::seconds(2), "undecodable")?;
            self.move_to(&mut d, gen::pick(rng, consenting))?;
            let user = Uuid::parse_str(d.get_str("user_id")?)?;
            match i {
                0 => drop(d.insert("user_id", binary_uuid(user))),
                1 => drop(d.insert("user_id", rng.gen_range(10_000_000..99_999_999_i64))),
                _ => drop(d.get_document_mut("statement")?.remove("actor")),
            }
            docs.push(d);
        }
        self.insert(docs).await
    }

    /// One statement of a consenting student on D, alone in its group: the
    /// KERIS statement it becomes is the one a proxy refuses.
    pub async fn proxy_refused(
        &self,
        rng: &mut StdRng,
        consenting: &[Student],
    ) -> anyhow::Result<Vec<Uuid>> {
        let all = self.templates(doc! {}, None).await?;
        for _ in 0..50 {
            let template = gen::pick(rng, &all);
            let at = self.day.at(0, 15, rng.gen_range(0..120));
            let mut d = copy(
                template,
                rng,
                at,
                at + Duration::seconds(1),
                "proxy-refused",
            )?;
            self.move_to(&mut d, gen::pick(rng, consenting))?;
            let (user, verb, object) = group_of(&d)?;
            let mut same = within(self.day.date, self.day.date);
            same.extend(doc! { "user_id": &user, "statement.verb.id": &verb, "statement.object.id": &object });
            if self.count(same).await? > 0 {
                continue;
            }
            self.insert(vec![d]).await?;
            let id = xapi::statement_id(&self.namespace, self.day.date, &user, &verb, &object);
            return Ok(vec![id]);
        }
        anyhow::bail!(
            "no statement could be placed alone in its group on {}",
            self.day.date
        )
    }

    /// Clean statements (readable, in the profile, not voided, written by
    /// the LRS rather than by this command) matching `filter`, of
    /// `students` only if given.
    async fn templates(
        &self,
        mut filter: Document,
        students: Option<&[Student]>,
    ) -> anyhow::Result<Vec<Document>> {
        filter.extend(doc! { MARKER: { "$exists": false }, "voided": false, "user_id": { "$type": "string" } });
        if let Some(students) = students {
            let ids: Vec<String> = students.iter().map(|s| s.user_id.to_string()).collect();
            filter.insert("user_id", doc! { "$in": ids });
        }
        let docs: Vec<Document> = self
            .coll
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(TEMPLATES)
            .await
            .context("Failed to read template statements")?
            .try_collect()
            .await
            .context("Failed to read template statements")?;
        Ok(docs
            .into_iter()
            .filter(|d| is_clean(d, &self.partner_key))
            .collect())
    }

    /// Makes `d` a statement of `student`.
    fn move_to(&self, d: &mut Document, student: &Student) -> anyhow::Result<()> {
        let (user, partner) = (student.user_id.to_string(), student.partner_id.to_string());
        d.insert("user_id", &user);
        d.insert("partner_id", &partner);
        let statement = d.get_document_mut("statement")?;
        statement.insert(
            "actor",
            doc! { "objectType": "Agent", "account": { "homePage": crate::seed::statements::HOME_PAGE, "name": &user } },
        );
        let context = statement.get_document_mut("context")?;
        context
            .get_document_mut("extensions")?
            .insert(&self.partner_key, partner);
        Ok(())
    }

    async fn count(&self, filter: Document) -> anyhow::Result<u64> {
        self.coll
            .count_documents(filter)
            .await
            .context("Failed to count statements")
    }

    async fn insert(&self, docs: Vec<Document>) -> anyhow::Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        let n = docs.len() as u64;
        self.coll
            .insert_many(docs)
            .await
            .context("Failed to insert statements")?;
        Ok(n)
    }
}

/// The filter of statements whose `timestamp` lies in `from`..=`to`.
fn within(from: NaiveDate, to: NaiveDate) -> Document {
    let end = start_of(to + Duration::days(1));
    doc! { "timestamp": { "$gte": bson_date(start_of(from)), "$lt": bson_date(end) } }
}

fn start_of(date: NaiveDate) -> DateTime<Utc> {
    time::start_of_day_seoul(date)
}

fn bson_date(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(mongodb::bson::DateTime::from_millis(t.timestamp_millis()))
}

fn time_of(d: mongodb::bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(d.timestamp_millis()).unwrap_or_default()
}

/// How long after its day's 00:00 (Seoul) a statement happened.
fn time_of_day(d: &Document) -> anyhow::Result<Duration> {
    let at = time_of(*d.get_datetime("timestamp")?);
    let date = at.with_timezone(&time::seoul()).date_naive();
    Ok(at - start_of(date))
}

/// A statement's group: user, verb and object ids.
fn group_of(d: &Document) -> anyhow::Result<(String, String, String)> {
    let statement = d.get_document("statement")?;
    Ok((
        d.get_str("user_id")?.to_string(),
        statement.get_document("verb")?.get_str("id")?.to_string(),
        statement.get_document("object")?.get_str("id")?.to_string(),
    ))
}

/// Whether the LRS wrote `d` readable and within the profile: a string
/// user id, an actor, a known verb, an object, an offset timestamp and the
/// document's own partner.
fn is_clean(d: &Document, partner_key: &str) -> bool {
    let Ok(statement) = d.get_document("statement") else {
        return false;
    };
    let verb = statement
        .get_document("verb")
        .and_then(|v| v.get_str("id"))
        .unwrap_or_default();
    let partner = statement
        .get_document("context")
        .and_then(|c| c.get_document("extensions"))
        .and_then(|e| e.get_str(partner_key))
        .ok();
    d.get_str("user_id")
        .is_ok_and(|u| Uuid::parse_str(u).is_ok())
        && statement.contains_key("actor")
        && statement.get_document("object").is_ok()
        && !verb.is_empty()
        && verb != xapi::VERB_VOIDED
        && !verb.ends_with("/answered")
        && statement
            .get_str("timestamp")
            .is_ok_and(|t| DateTime::parse_from_rfc3339(t).is_ok())
        && partner == d.get_str("partner_id").ok()
        && d.get_datetime("timestamp").is_ok()
        && d.get_datetime("stored").is_ok()
}

/// A copy of `template` that happened at `at` and was stored at `stored`,
/// marked `kind`.
fn copy(
    template: &Document,
    rng: &mut StdRng,
    at: DateTime<Utc>,
    stored: DateTime<Utc>,
    kind: &str,
) -> anyhow::Result<Document> {
    let mut d = template.clone();
    d.get_document_mut("statement")?
        .insert("id", gen::uuid(rng).to_string());
    place(&mut d, rng, at, stored);
    d.insert("voided", false);
    d.insert(MARKER, kind);
    Ok(d)
}

/// `d` moved by `shift` (the day's statements moved to D), with new ids;
/// a timestamp text without offset keeps its form.
fn moved(d: &Document, shift: Duration, rng: &mut StdRng) -> Document {
    let mut d = d.clone();
    let at = d.get_datetime("timestamp").map(|t| time_of(*t) + shift);
    let stored = d.get_datetime("stored").map(|t| time_of(*t) + shift);
    if let (Ok(at), Ok(stored)) = (at, stored) {
        let text = d
            .get_document("statement")
            .and_then(|s| s.get_str("timestamp"))
            .map(|t| DateTime::parse_from_rfc3339(t).is_ok());
        place(&mut d, rng, at, stored);
        if text == Ok(false) {
            let local = at
                .with_timezone(&time::seoul())
                .format("%Y-%m-%dT%H:%M:%S%.3f");
            if let Ok(s) = d.get_document_mut("statement") {
                s.insert("timestamp", local.to_string());
            }
        }
    }
    if let Ok(s) = d.get_document_mut("statement") {
        s.insert("id", gen::uuid(rng).to_string());
    }
    d
}

/// Sets the times of `d` (its `_id` follows `stored`, as the server's do).
fn place(d: &mut Document, rng: &mut StdRng, at: DateTime<Utc>, stored: DateTime<Utc>) {
    d.insert("_id", object_id(rng, stored));
    d.insert("timestamp", bson_date(at));
    d.insert("stored", bson_date(stored));
    if let Ok(s) = d.get_document_mut("statement") {
        s.insert("timestamp", rfc3339_seoul(at));
    }
}

/// A UUID as BSON binary subtype 4, as drivers that store UUIDs natively
/// write it.
fn binary_uuid(id: Uuid) -> Binary {
    Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.as_bytes().to_vec(),
    }
}
