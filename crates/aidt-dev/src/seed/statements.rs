//! `statements`: what the vendor's LRS stores for each received xAPI
//! statement — `{_id, statement, user_id, partner_id, timestamp, stored,
//! voided}` (data-contract.md) — with statements of the AIDT profile
//! (keris-api.md) on the business date.
//!
//! The mix the aggregation and transfer jobs need: mostly assessment
//! answers, page views and video plays by active pupils (a few pupils much
//! more active than others), repeated attempts on the same item, a few
//! teacher statements, ~1% voided, and ~0.5% that break the profile (a verb
//! outside the table, no object, a timestamp without offset, a foreign
//! partner id) so the validation paths have data.
//!
//! Extension keys: xAPI extension keys are IRIs full of dots. The seed
//! stores them the way LRSs written for MongoDB before 5.0 (which refused
//! `.` in keys) do, Learning Locker's convention: every `.` written as
//! `&46;`. An LRS on MongoDB 5+ may store the dots as they are; readers
//! ([`crate::xapi::decode_keys`]) accept both.
//!
//! Documents are generated in batches of `BATCH` and written with
//! `insert_many` in spawned tasks, up to `IN_FLIGHT` at once, while the
//! next batch is generated: memory stays at a few batches whatever
//! `--statements` is, and generation overlaps the server's work.

use anyhow::{bail, Context as _};
use chrono::{DateTime, Duration, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, Document};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::Rng;

use super::gen::{self, chance};
use super::world::{ContentKind, Level, User, World};

/// Documents per `insert_many`.
const BATCH: usize = 2_000;
/// Batches being written while the next one is generated. The server works
/// on several inserts at once: one at a time took twice as long here
/// (FerretDB v1, 100k statements, 2 cores), more than four gained nothing.
const IN_FLIGHT: usize = 4;
/// The vendor's home page: the `account.homePage` of every actor and the
/// root of activity ids.
pub(crate) const HOME_PAGE: &str = "https://aidt.example.kr";
/// `context.platform` of the vendor's statements.
const PLATFORM: &str = "aidt-demo";
const PROFILE_BASE: &str = "http://aidtbook.kr/xapi/profiles";
const ACTIVITY_TYPE_BASE: &str = "http://aidtbook.kr/xapi/activity-type";
const EXT_PARTNER_ID: &str =
    "http://aidtbook.kr/xapi/profiles/cmn/1.0/contexts/extensions/partner-id";
const EXT_CURRICULUM_STANDARD: &str =
    "http://aidtbook.kr/xapi/profiles/assessment/1.0/results/extensions/curriculum-standard";
/// Share of statements written by teachers (teaching and assignment verbs).
const TEACHER_SHARE: f64 = 0.01;
const VOIDED_SHARE: f64 = 0.01;
const INVALID_SHARE: f64 = 0.005;
/// Share of answers followed by another attempt at the same item.
const RETRY_SHARE: f64 = 0.15;

/// How a `.` in a document key is stored (see the module header).
pub use aidt_batch::contract::STORED_DOT;

/// The stored form of an xAPI extension key.
pub fn stored_key(iri: &str) -> String {
    iri.replace('.', STORED_DOT)
}

/// What a verb acts on, which decides the object and the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// An item of a content, answered: score, success, standard and level.
    Answer,
    /// A content, with the content's own activity type.
    Content,
    /// A content, with a fixed activity type.
    Typed(&'static str),
}

struct Verb {
    area: &'static str,
    verb: &'static str,
    weight: u32,
    target: Target,
}

/// The pupils' verbs of the profile table, weighted as a day of learning
/// looks: answers, page views and videos dominate.
const STUDENT_VERBS: [Verb; 13] = [
    Verb {
        area: "assessment",
        verb: "submitted",
        weight: 400,
        target: Target::Answer,
    },
    Verb {
        area: "navigation",
        verb: "viewed",
        weight: 220,
        target: Target::Content,
    },
    Verb {
        area: "media",
        verb: "played",
        weight: 150,
        target: Target::Typed("video"),
    },
    Verb {
        area: "navigation",
        verb: "read",
        weight: 40,
        target: Target::Content,
    },
    Verb {
        area: "navigation",
        verb: "did",
        weight: 30,
        target: Target::Content,
    },
    Verb {
        area: "navigation",
        verb: "learned",
        weight: 30,
        target: Target::Content,
    },
    Verb {
        area: "assignment",
        verb: "finished",
        weight: 30,
        target: Target::Typed("assignment"),
    },
    Verb {
        area: "objective",
        verb: "set",
        weight: 10,
        target: Target::Typed("objective"),
    },
    Verb {
        area: "query",
        verb: "searched",
        weight: 10,
        target: Target::Typed("search"),
    },
    Verb {
        area: "query",
        verb: "asked",
        weight: 10,
        target: Target::Typed("question"),
    },
    Verb {
        area: "social-learning",
        verb: "participated",
        weight: 10,
        target: Target::Typed("discussion"),
    },
    Verb {
        area: "survey",
        verb: "submitted",
        weight: 10,
        target: Target::Typed("survey"),
    },
    Verb {
        area: "annotation",
        verb: "made",
        weight: 10,
        target: Target::Typed("annotation"),
    },
];

const TEACHER_VERBS: [Verb; 3] = [
    Verb {
        area: "teaching",
        verb: "gave",
        weight: 50,
        target: Target::Typed("lesson"),
    },
    Verb {
        area: "teaching",
        verb: "reorganized",
        weight: 20,
        target: Target::Typed("lesson"),
    },
    Verb {
        area: "assignment",
        verb: "gave",
        weight: 30,
        target: Target::Typed("assignment"),
    },
];

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    written: u64,
    voided: u64,
    invalid: u64,
}

pub(super) async fn write(
    db: &mongodb::Database,
    world: &World,
    seed: u64,
    total: u32,
) -> anyhow::Result<Vec<(String, u64)>> {
    let collection = db.collection::<Document>(aidt_batch::contract::STATEMENTS);
    let name = format!("{}.{}", db.name(), aidt_batch::contract::STATEMENTS);
    let mut counts = Counts::default();
    if total > 0 {
        let mut generator = Generator::new(world, seed)?;
        let mut in_flight = FuturesUnordered::new();
        let mut remaining = total as usize;
        while remaining > 0 {
            let docs = generator.batch(remaining.min(BATCH), &mut counts);
            remaining -= docs.len();
            if in_flight.len() >= IN_FLIGHT {
                counts.written += finished(in_flight.next().await, &name)?;
            }
            let collection = collection.clone();
            in_flight.push(tokio::spawn(async move {
                collection.insert_many(docs).ordered(false).await
            }));
        }
        while let Some(done) = in_flight.next().await {
            counts.written += finished(Some(done), &name)?;
        }
    }
    Ok(vec![
        (name.clone(), counts.written),
        (format!("{name} (voided)"), counts.voided),
        (format!("{name} (invalid for the profile)"), counts.invalid),
    ])
}

type InsertOutcome =
    Result<mongodb::error::Result<mongodb::results::InsertManyResult>, tokio::task::JoinError>;

fn finished(done: Option<InsertOutcome>, name: &str) -> anyhow::Result<u64> {
    let result = done
        .expect("a batch is in flight")
        .with_context(|| format!("Failed to insert {name}: the writing task failed"))?
        .with_context(|| format!("Failed to insert {name}"))?;
    Ok(result.inserted_ids.len() as u64)
}

struct Generator<'w> {
    world: &'w World,
    rng: StdRng,
    active: Vec<usize>,
    pick_student: WeightedIndex<f64>,
    /// Teachers (index into `users`) with their lectures that have content.
    teachers: Vec<(usize, Vec<usize>)>,
    student_verbs: WeightedIndex<u32>,
    teacher_verbs: WeightedIndex<u32>,
    key_partner_id: String,
    key_curriculum_standard: String,
    /// Documents of an event not yet placed in a batch (second attempts).
    pending: Vec<Document>,
}

impl<'w> Generator<'w> {
    fn new(world: &'w World, seed: u64) -> anyhow::Result<Self> {
        let active = world.active_students();
        if active.is_empty() {
            bail!("no student learns on the business date, so no statement can be generated (use more --students)");
        }
        let pick_student = WeightedIndex::new(active.iter().map(|&s| world.students[s].weight))
            .expect("positive weights");
        let mut teachers: Vec<(usize, Vec<usize>)> = Vec::new();
        for (l, lecture) in world.lectures.iter().enumerate() {
            if world.courses[lecture.course].playable.is_empty() {
                continue;
            }
            match teachers.iter_mut().find(|(t, _)| *t == lecture.teacher) {
                Some((_, lectures)) => lectures.push(l),
                None => teachers.push((lecture.teacher, vec![l])),
            }
        }
        Ok(Self {
            world,
            rng: gen::stream(seed, "statements"),
            active,
            pick_student,
            teachers,
            student_verbs: WeightedIndex::new(STUDENT_VERBS.iter().map(|v| v.weight))
                .expect("positive weights"),
            teacher_verbs: WeightedIndex::new(TEACHER_VERBS.iter().map(|v| v.weight))
                .expect("positive weights"),
            key_partner_id: stored_key(EXT_PARTNER_ID),
            key_curriculum_standard: stored_key(EXT_CURRICULUM_STANDARD),
            pending: Vec::new(),
        })
    }

    fn batch(&mut self, n: usize, counts: &mut Counts) -> Vec<Document> {
        let mut docs = Vec::with_capacity(n);
        while docs.len() < n {
            match self.pending.pop() {
                Some(doc) => docs.push(doc),
                None => self.event(counts),
            }
        }
        docs
    }

    /// One learning event: one statement, or two for a repeated attempt.
    fn event(&mut self, counts: &mut Counts) {
        if !self.teachers.is_empty() && chance(&mut self.rng, TEACHER_SHARE) {
            self.teacher_event(counts);
            return;
        }
        let world = self.world;
        let s = self.active[self.pick_student.sample(&mut self.rng)];
        let student = &world.students[s];
        let user = world.user_of(s);
        let verb = &STUDENT_VERBS[self.student_verbs.sample(&mut self.rng)];
        let lecture = *gen::pick(&mut self.rng, &student.today);
        let course = world.lectures[lecture].course;
        let mut content = world.pick_content(&mut self.rng, student, course);
        if verb.target == Target::Typed("video") {
            // Prefer a video among the contents near the pupil's place.
            for _ in 0..3 {
                if world.contents[content].kind == ContentKind::Video {
                    break;
                }
                content = world.pick_content(&mut self.rng, student, course);
            }
        }
        let time = world.day.learning_time(&mut self.rng);
        if verb.target != Target::Answer {
            let object = self.content_object(content, verb.target);
            let result = self.plain_result(verb);
            let doc = self.document(user, verb, Some(object), result, time, counts);
            self.pending.push(doc);
            return;
        }
        let item = world.pick_item(&mut self.rng, content);
        let attempts = if chance(&mut self.rng, RETRY_SHARE) {
            2
        } else {
            1
        };
        let mut time = time;
        for attempt in 0..attempts {
            if attempt > 0 {
                time = world
                    .day
                    .clamp(time + Duration::seconds(self.rng.gen_range(30..600)));
            }
            let (correct, score) = world.items[item].answer(&mut self.rng, student.ability);
            let std_sys = &world.std_sys[*gen::pick(&mut self.rng, &world.items[item].std_sys)].id;
            let level = gen::achievement_level(world.level_of(user) == Level::E, score);
            let result = doc! {
                "score": { "raw": i32::from(score) },
                "success": correct,
                "duration": format!("PT{}S", self.rng.gen_range(10..=300)),
                "extensions": { &self.key_curriculum_standard: [ { "id": std_sys.as_str(), "achievement-level": level } ] },
            };
            let object = doc! {
                "id": format!("{HOME_PAGE}/content/{}/item/{}", world.contents[content].id, world.items[item].id),
                "objectType": "Activity",
                "definition": { "type": format!("{ACTIVITY_TYPE_BASE}/question") },
            };
            let doc = self.document(user, verb, Some(object), Some(result), time, counts);
            self.pending.push(doc);
        }
    }

    fn teacher_event(&mut self, counts: &mut Counts) {
        let world = self.world;
        let (teacher, lectures) = gen::pick(&mut self.rng, &self.teachers);
        let user = &world.users[*teacher];
        let lecture = *gen::pick(&mut self.rng, lectures);
        let content = *gen::pick(
            &mut self.rng,
            &world.courses[world.lectures[lecture].course].playable,
        );
        let verb = &TEACHER_VERBS[self.teacher_verbs.sample(&mut self.rng)];
        let time = world.day.learning_time(&mut self.rng);
        let object = self.content_object(content, verb.target);
        let doc = self.document(user, verb, Some(object), None, time, counts);
        self.pending.push(doc);
    }

    fn content_object(&self, content: usize, target: Target) -> Document {
        let content = &self.world.contents[content];
        let activity_type = match target {
            Target::Typed(t) => t,
            _ => content.kind.activity_type(),
        };
        doc! {
            "id": format!("{HOME_PAGE}/content/{}", content.id),
            "objectType": "Activity",
            "definition": { "type": format!("{ACTIVITY_TYPE_BASE}/{activity_type}") },
        }
    }

    /// Time spent (and completion) for media, navigation, assignments and
    /// surveys; nothing for the other verbs.
    fn plain_result(&mut self, verb: &Verb) -> Option<Document> {
        let rng = &mut self.rng;
        match verb.area {
            "media" => Some(
                doc! { "duration": format!("PT{}S", rng.gen_range(30..=900)), "completion": chance(rng, 0.6) },
            ),
            "navigation" => Some(doc! { "duration": format!("PT{}S", rng.gen_range(5..=600)) }),
            "assignment" => Some(
                doc! { "duration": format!("PT{}S", rng.gen_range(60..=1800)), "completion": true },
            ),
            "survey" => Some(doc! { "completion": true }),
            _ => None,
        }
    }

    /// The stored document around one statement; a few are voided and a few
    /// are broken on purpose.
    fn document(
        &mut self,
        user: &User,
        verb: &Verb,
        object: Option<Document>,
        result: Option<Document>,
        time: DateTime<Utc>,
        counts: &mut Counts,
    ) -> Document {
        let world = self.world;
        let rng = &mut self.rng;
        let partner = world.partner_of(user).to_string();
        let mut statement = doc! {
            "id": gen::uuid(rng).to_string(),
            "actor": { "objectType": "Agent", "account": { "homePage": HOME_PAGE, "name": user.id.to_string() } },
            "verb": {
                "id": format!("{PROFILE_BASE}/{}/1.0/verbs/{}", verb.area, verb.verb),
                "display": { "en-US": verb.verb },
            },
        };
        if let Some(object) = object {
            statement.insert("object", object);
        }
        if let Some(result) = result {
            statement.insert("result", result);
        }
        statement.insert(
            "context",
            doc! { "platform": PLATFORM, "extensions": { &self.key_partner_id: partner.as_str() } },
        );
        statement.insert("timestamp", gen::rfc3339_seoul(time));
        if chance(rng, INVALID_SHARE) {
            counts.invalid += 1;
            break_profile(rng, &mut statement, &self.key_partner_id, time);
        }
        // The LRS stores a statement within seconds, or hours later when
        // an app synchronises after working offline.
        let delay = if chance(rng, 0.02) {
            Duration::minutes(rng.gen_range(60..360))
        } else {
            Duration::milliseconds(rng.gen_range(50..3_000))
        };
        let stored = time + delay;
        let voided = chance(rng, VOIDED_SHARE);
        counts.voided += u64::from(voided);
        doc! {
            "_id": object_id(rng, stored),
            "statement": statement,
            "user_id": user.id.to_string(),
            "partner_id": partner,
            "timestamp": Bson::DateTime(mongodb::bson::DateTime::from_millis(time.timestamp_millis())),
            "stored": Bson::DateTime(mongodb::bson::DateTime::from_millis(stored.timestamp_millis())),
            "voided": voided,
        }
    }
}

/// Breaks a statement the way real clients do, in one of the ways the
/// KERIS validation rejects (keris-api.md).
fn break_profile(
    rng: &mut StdRng,
    statement: &mut Document,
    key_partner_id: &str,
    time: DateTime<Utc>,
) {
    match rng.gen_range(0..4) {
        0 => {
            statement.insert(
                "verb",
                doc! { "id": format!("{PROFILE_BASE}/assessment/1.0/verbs/answered"), "display": { "en-US": "answered" } },
            );
        }
        1 => {
            statement.remove("object");
        }
        2 => {
            let local = time
                .with_timezone(&aidt_batch::time::seoul())
                .format("%Y-%m-%dT%H:%M:%S%.3f")
                .to_string();
            statement.insert("timestamp", local);
        }
        _ => {
            let foreign = gen::uuid(rng).to_string();
            statement.insert(
                "context",
                doc! { "platform": PLATFORM, "extensions": { key_partner_id: foreign } },
            );
        }
    }
}

/// An ObjectId like the server's (seconds of the insert first), with the
/// remaining bytes from the stream instead of a process counter.
pub(crate) fn object_id(rng: &mut StdRng, stored: DateTime<Utc>) -> ObjectId {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&(stored.timestamp() as u32).to_be_bytes());
    rng.fill(&mut bytes[4..]);
    ObjectId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_have_no_dots() {
        let key = stored_key(EXT_PARTNER_ID);
        assert!(!key.contains('.'));
        assert_eq!(key.replace(STORED_DOT, "."), EXT_PARTNER_ID);
    }
}
