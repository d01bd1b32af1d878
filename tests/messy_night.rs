//! Two messy nights (`aidt-dev mess`) run in cron order by the real binary
//! against the KERIS simulator over HTTP: what KERIS holds, what the LRS,
//! the LMS, the LCMS copy and the back office are left with, and what the
//! runs' details name, against figures computed here from the documents
//! and rows the data set wrote (an independent model of the nights, not the
//! jobs' code).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr as _;

use aidt_batch::jobs::REGISTRY;
use aidt_batch::runtime::registry::DefaultDate;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use croner::Cron;
use futures::TryStreamExt as _;
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{date, stderr, stdout, TestEnv};

/// A Tuesday: the nights fall on a Wednesday and a Thursday (no weekly job).
const D1: &str = "2026-03-10";
const D2: &str = "2026-03-11";
const SEED: &str = "27";
const VOIDED: &str = "http://adlnet.gov/expapi/verbs/voided";
/// LRS-01-001's default look-back of late statements.
const LOOK_BACK_DAYS: i64 = 7;

fn kst(date: NaiveDate) -> DateTime<Utc> {
    aidt_batch::time::start_of_day_seoul(date)
}

fn millis(date: NaiveDate) -> i64 {
    kst(date).timestamp_millis()
}

// The night, as cron runs it -----------------------------------------------------

/// One line of the crontab: its schedule, and the job with its options.
struct CronLine {
    schedule: Cron,
    job: String,
    args: Vec<String>,
}

/// The lines of `aidt-batch crontab` (the registry's schedule), `--profile`
/// and the log redirection left out.
fn crontab(env: &TestEnv) -> Vec<CronLine> {
    let out = env.run_cli(&["crontab", "--profile", "prod"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| !l.split_whitespace().next().unwrap_or("").contains('='))
        .map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let bin = tokens
                .iter()
                .position(|t| t.ends_with("/aidt-batch"))
                .unwrap_or_else(|| panic!("no aidt-batch command in: {line}"));
            let mut rest = tokens[bin + 1..]
                .iter()
                .take_while(|t| !t.starts_with(">>"));
            let job = rest.next().unwrap().to_string();
            let mut args = Vec::new();
            while let Some(t) = rest.next() {
                match *t {
                    "--profile" => drop(rest.next()),
                    _ => args.push(t.to_string()),
                }
            }
            CronLine {
                schedule: Cron::from_str(&tokens[..5].join(" ")).unwrap(),
                job,
                args,
            }
        })
        .collect()
}

/// The runs of the night of `day` (cron's day D+1, 00:00–24:00 KST): each
/// line once, at its first time that day, in time order (crontab order at
/// the same minute), with the date cron's run would take by default.
fn night_plan(lines: &[CronLine], day: NaiveDate) -> Vec<(String, Vec<String>)> {
    let night = day + Duration::days(1);
    let start = night.and_hms_opt(0, 0, 0).unwrap();
    let mut runs: Vec<_> = lines
        .iter()
        .filter_map(|l| {
            let at = l.schedule.find_next_occurrence(&start, true).ok()?;
            (at.date() == night).then_some((at, l))
        })
        .collect();
    runs.sort_by_key(|(at, _)| *at);
    runs.into_iter()
        .map(|(_, l)| {
            let def = REGISTRY.find(&l.job).unwrap();
            let date = match def.default_date {
                DefaultDate::Yesterday => day,
                DefaultDate::Today => night,
            };
            let mut args = vec!["--date".to_string(), date.to_string()];
            args.extend(l.args.iter().cloned());
            (def.id.to_string(), args)
        })
        .collect()
}

/// One finished run of the night.
#[derive(Debug)]
struct Run {
    job: String,
    exit: i32,
    run_id: i64,
}

/// Runs the night's plan with the real binary against `sim`.
async fn run_night(
    env: &TestEnv,
    sim: &SimulatorHandle,
    plan: &[(String, Vec<String>)],
) -> Vec<Run> {
    let mut runs = Vec::new();
    for (job, args) in plan {
        let mut cmd = env.command(&[job.to_lowercase().as_str()]);
        cmd.args(args)
            .env("AIDT__KERIS__API_DOMAIN", sim.base_url())
            .env("AIDT__KERIS__BASE_BACKOFF_MS", "5")
            .env("AIDT__KERIS__MAX_BACKOFF_MS", "20")
            .env("AIDT__KERIS__MAX_STATEMENTS_PER_REQUEST", "100");
        // Not blocking: the simulator answers on this test's runtime.
        let out = tokio::process::Command::from(cmd).output().await.unwrap();
        let run_id: i64 =
            sqlx::query_scalar("SELECT max(run_id) FROM batch_job_run WHERE job_id = $1")
                .bind(job)
                .fetch_one(env.pg())
                .await
                .unwrap();
        let exit = out.status.code().unwrap_or(-1);
        if ![0, 4].contains(&exit) {
            eprintln!("{job} {args:?} exit {exit}: {}", stderr(&out));
        }
        runs.push(Run {
            job: job.clone(),
            exit,
            run_id,
        });
    }
    runs
}

fn run_of<'a>(runs: &'a [Run], job: &str) -> &'a Run {
    runs.iter()
        .find(|r| r.job == job)
        .unwrap_or_else(|| panic!("{job} did not run"))
}

// The LRS as the data set wrote it --------------------------------------------------

/// One document of the LRS's `statements`, read here without the jobs' code.
#[derive(Debug, Clone)]
struct Src {
    /// `_id` as the runs name it (an ObjectId's hex).
    id: String,
    /// `user_id` when it is a string; `None` when it is anything else.
    user: Option<String>,
    actor: bool,
    verb: String,
    object: String,
    day: NaiveDate,
    stored: i64,
    voided_flag: bool,
    xapi_id: String,
    /// Whether the profile refuses it: a verb outside the table, no object,
    /// a partner-id extension other than the document's.
    broken: bool,
}

impl Src {
    fn read(d: &Document, partner_key: &str) -> Self {
        let statement = d.get_document("statement").cloned().unwrap_or_default();
        let text = |doc: &Document, path: &[&str]| -> Option<String> {
            let (last, parents) = path.split_last()?;
            let mut cur = doc;
            for p in parents {
                cur = cur.get_document(p).ok()?;
            }
            cur.get_str(last).ok().map(str::to_string)
        };
        let verb = text(&statement, &["verb", "id"]).unwrap_or_default();
        let object = text(&statement, &["object", "id"]).unwrap_or_default();
        let partner = text(&statement, &["context", "extensions", partner_key]);
        let time = |k: &str| d.get_datetime(k).map(|t| t.timestamp_millis()).unwrap();
        let timestamp = DateTime::from_timestamp_millis(time("timestamp")).unwrap();
        Src {
            id: d.get_object_id("_id").unwrap().to_hex(),
            user: d.get_str("user_id").ok().map(str::to_string),
            actor: statement.contains_key("actor"),
            broken: verb.ends_with("/answered")
                || object.is_empty()
                || partner.as_deref() != d.get_str("partner_id").ok(),
            verb,
            object,
            day: timestamp
                .with_timezone(&aidt_batch::time::seoul())
                .date_naive(),
            stored: time("stored"),
            voided_flag: d.get_bool("voided").unwrap_or(false),
            xapi_id: text(&statement, &["id"]).unwrap_or_default(),
        }
    }

    fn readable(&self) -> bool {
        self.user.is_some() && self.actor
    }

    fn voiding(&self) -> bool {
        self.verb == VOIDED
    }

    fn group(&self) -> Group {
        (
            self.user.clone().unwrap_or_default(),
            self.verb.clone(),
            self.object.clone(),
            self.day,
        )
    }
}

/// (student, verb id, object id, learning day): one KERIS group.
type Group = (String, String, String, NaiveDate);

async fn lrs_snapshot(env: &TestEnv) -> Vec<Src> {
    let key = aidt_dev::seed::stored_key(aidt_batch::xapi::EXT_PARTNER_ID);
    let docs: Vec<Document> = env
        .app
        .mongo
        .collection::<Document>(aidt_batch::contract::STATEMENTS)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter().map(|d| Src::read(d, &key)).collect()
}

/// Students whose records never reach KERIS: no `PRVC_PROVIDE` consent
/// (every grace period of these dates is long over by the wall clock).
async fn withheld(env: &TestEnv) -> HashSet<String> {
    sqlx::query_scalar(
        "SELECT u.user_id::text FROM tb_lms_user u WHERE u.user_type = 'S' AND NOT EXISTS (
            SELECT 1 FROM tb_lms_user_consent c WHERE c.user_id = u.user_id
               AND c.consent_type = 'PRVC_PROVIDE' AND c.agree_yn = 'Y')",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

// The model of the nights -------------------------------------------------------------

/// Where a group's first KERIS statement stands after a night.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    /// Not sent: INVALID (or READY, which never outlives a night here).
    Open,
    /// SENT, or ERROR then FAILED: its content never changes again.
    Closed,
}

/// What the model expects of one night's runs.
#[derive(Debug, Default)]
struct NightFigures {
    undecodable: BTreeSet<String>,
    withheld: u64,
    voiding: u64,
    too_late: BTreeMap<NaiveDate, u64>,
    voided_after_sent: u64,
    /// KERIS statements sent per learning day.
    sent: BTreeMap<NaiveDate, u64>,
    refused: u64,
}

/// The nights so far: what each group's first statement is, which source
/// statements were covered, and the attempts KERIS holds per group.
struct Model {
    namespace: Uuid,
    withheld: HashSet<String>,
    refused: HashSet<Uuid>,
    first: HashMap<Group, First>,
    covered: HashMap<Group, Vec<Src>>,
    covered_ids: HashSet<String>,
    keris: BTreeMap<Group, u64>,
    /// End of the last night's window of `stored` (ms).
    watermark: Option<i64>,
}

impl Model {
    fn first_id(&self, g: &Group) -> Uuid {
        let name = format!("{}|{}|{}|{}", g.3, g.0, g.1, g.2);
        Uuid::new_v5(&self.namespace, name.as_bytes())
    }

    /// The night of `day` over the LRS as it was before it.
    fn night(&mut self, day: NaiveDate, lrs: &[Src]) -> NightFigures {
        let after = self.watermark.unwrap_or(millis(day));
        let until = millis(day + Duration::days(1));
        let in_window = |s: &Src| s.stored > after && s.stored <= until;
        let day_pass = |s: &Src| s.day == day && !s.voided_flag && s.stored <= until;
        let late_pass = |s: &Src| in_window(s) && s.day < day;
        let mut voided_at: HashMap<&str, i64> = HashMap::new();
        for v in lrs.iter().filter(|s| s.readable() && s.voiding()) {
            let at = voided_at.entry(v.object.as_str()).or_insert(v.stored);
            *at = (*at).min(v.stored);
        }
        let voided = |s: &Src| match voided_at.get(s.xapi_id.as_str()) {
            Some(at) => *at <= until,
            None => s.voided_flag,
        };
        let mut f = NightFigures::default();
        let mut new: HashMap<Group, Vec<Src>> = HashMap::new();
        for s in lrs.iter().filter(|s| day_pass(s) || late_pass(s)) {
            if !s.readable() {
                f.undecodable.insert(s.id.clone());
                continue;
            }
            if s.voiding() {
                f.voiding += 1;
                for t in lrs.iter().filter(|t| t.xapi_id == s.object) {
                    match self.first.get(&t.group()) {
                        Some(First::Closed) if self.covered_ids.contains(&t.id) => {
                            f.voided_after_sent += u64::from(in_window(s));
                        }
                        Some(First::Open) => drop(new.entry(t.group()).or_default()),
                        _ => {}
                    }
                }
                continue;
            }
            let late = s.day < day;
            if late && s.voided_flag {
                continue;
            }
            if late && s.day < day - Duration::days(LOOK_BACK_DAYS) {
                *f.too_late.entry(s.day).or_default() += 1;
                continue;
            }
            if s.user.as_ref().is_some_and(|u| self.withheld.contains(u)) {
                f.withheld += 1;
                continue;
            }
            if self.covered_ids.insert(s.id.clone()) && !voided(s) {
                new.entry(s.group()).or_default().push(s.clone());
            }
        }
        for (g, statements) in new {
            self.send(&g, statements, &voided, &mut f);
        }
        self.watermark = Some(until);
        f
    }

    /// What the night sends of one group's new statements.
    fn send(
        &mut self,
        g: &Group,
        new: Vec<Src>,
        voided: &dyn Fn(&Src) -> bool,
        f: &mut NightFigures,
    ) {
        match self.first.get(g) {
            Some(First::Closed) if new.is_empty() => {}
            Some(First::Closed) => {
                self.covered
                    .entry(g.clone())
                    .or_default()
                    .extend(new.clone());
                if !new.iter().any(|s| s.broken) {
                    *self.keris.entry(g.clone()).or_default() += new.len() as u64;
                    *f.sent.entry(g.3).or_default() += 1;
                }
            }
            _ => {
                let all = self.covered.entry(g.clone()).or_default();
                all.extend(new);
                let content: Vec<&Src> = all.iter().filter(|s| !voided(s)).collect();
                if content.is_empty() {
                    self.first.remove(g);
                    return;
                }
                if content.iter().any(|s| s.broken) {
                    self.first.insert(g.clone(), First::Open);
                    return;
                }
                let n = content.len() as u64;
                self.first.insert(g.clone(), First::Closed);
                if self.refused.contains(&self.first_id(g)) {
                    f.refused += 1;
                } else {
                    *self.keris.entry(g.clone()).or_default() += n;
                    *f.sent.entry(g.3).or_default() += 1;
                }
            }
        }
    }
}

// What the stores hold ---------------------------------------------------------------

/// Attempts KERIS holds per group, from the statements the simulator
/// accepted; panics on an id accepted twice.
fn keris_attempts(sim: &SimulatorHandle, attempts_key: &str) -> BTreeMap<Group, u64> {
    let recorded = sim.statements(1_000_000);
    let ids: HashSet<_> = recorded.iter().map(|r| r.id).collect();
    assert_eq!(
        ids.len(),
        recorded.len(),
        "a statement id reached KERIS twice"
    );
    let stats = sim.stats();
    assert_eq!(stats.statements_accepted(), recorded.len() as u64);
    let mut groups = BTreeMap::new();
    for r in recorded {
        let s = &r.statement;
        let field = |p: &str| {
            s.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let day = date(&field("/timestamp")[..10]);
        let group = (
            field("/actor/account/name"),
            field("/verb/id"),
            field("/object/id"),
            day,
        );
        let attempts = s["result"]["extensions"][attempts_key].as_u64().unwrap();
        *groups.entry(group).or_default() += attempts;
    }
    groups
}

/// The differences between two maps, for a readable failure.
fn diff(expected: &BTreeMap<Group, u64>, actual: &BTreeMap<Group, u64>) -> Vec<String> {
    let keys: BTreeSet<&Group> = expected.keys().chain(actual.keys()).collect();
    keys.into_iter()
        .filter(|k| expected.get(*k) != actual.get(*k))
        .take(10)
        .map(|k| {
            format!(
                "{k:?}: expected {:?}, KERIS {:?}",
                expected.get(k),
                actual.get(k)
            )
        })
        .collect()
}

/// The LMS copy of the LCMS, every column but `sync_dt`.
async fn lcms_copy(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s %s %s %s', c.content_id, c.use_yn, c.title, c.course_id) FROM tb_lms_content c
         UNION ALL
         SELECT format('%s %s %s %s %s %s', i.item_id, i.content_id, i.use_yn, i.std_sys_ids, i.kc_ids, i.difficulty)
           FROM tb_lms_item i
         ORDER BY 1",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
}

async fn maintenance(env: &TestEnv) -> (String, Vec<String>) {
    let flag: String =
        sqlx::query_scalar("SELECT maint_yn FROM tb_bo_service_status WHERE target_sys = 'LMS'")
            .fetch_one(env.pg())
            .await
            .unwrap();
    let windows = sqlx::query_scalar(
        "SELECT status FROM tb_bo_pm_schedule WHERE notice_msg LIKE '[aidt-dev mess]%' ORDER BY pm_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    (flag, windows)
}

/// `aidt-dev mess --date day`: the KERIS ids a proxy must refuse.
fn mess(env: &TestEnv, day: &str) -> Vec<Uuid> {
    let out = env.run_dev(&["mess", "--date", day, "--seed", SEED]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| l.contains("--proxy-statement-id"))
        .map(|l| Uuid::parse_str(l.rsplit(' ').next().unwrap()).unwrap())
        .collect()
}

// The test ------------------------------------------------------------------------

#[tokio::test]
async fn two_messy_nights_run_in_cron_order_send_every_storable_statement_once_and_lose_nothing() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = TestEnv::new().await;
    let seed = env.run_dev(&[
        "seed",
        "--students",
        "150",
        "--statements",
        "2500",
        "--date",
        D1,
        "--seed",
        SEED,
    ]);
    assert!(seed.status.success(), "{}", stderr(&seed));
    let mut model = Model {
        namespace: env.loaded.settings.jobs.lrs_aggregate.id_namespace,
        withheld: withheld(&env).await,
        refused: HashSet::new(),
        first: HashMap::new(),
        covered: HashMap::new(),
        covered_ids: HashSet::new(),
        keris: BTreeMap::new(),
        watermark: None,
    };
    let lines = crontab(&env);
    let copy = lcms_copy(&env).await;
    for (night, day) in [D1, D2].into_iter().enumerate() {
        let refused = mess(&env, day);
        assert_eq!(refused.len(), 1, "one statement a proxy refuses on {day}");
        model.refused.extend(refused);
        sim.set_faults(Faults {
            proxy_status: 413,
            proxy_statement_ids: model.refused.iter().copied().collect(),
            ..Faults::default()
        });
        let expected = model.night(date(day), &lrs_snapshot(&env).await);
        let late_days = expected.sent.keys().filter(|d| **d < date(day)).count();
        assert!(
            late_days >= 5,
            "late statements of {late_days} earlier days to send: {expected:?}"
        );
        let plan = night_plan(&lines, date(day));
        assert_cron_order(&plan);
        let runs = run_night(&env, &sim, &plan).await;
        assert_exits(&runs);
        assert_lrs_details(&env, run_of(&runs, "LRS-01-001"), &expected, night).await;
        assert_transfer_details(&env, &runs, day, &expected).await;
        assert_lcms_refused(&env, run_of(&runs, "LCMS-01-001"), &copy).await;
        assert_night_report(&env, day, &expected);
        let (flag, windows) = maintenance(&env).await;
        match night {
            0 => assert_eq!((flag.as_str(), windows), ("Y", vec!["ACTIVE".to_string()])),
            _ => assert_eq!(
                (flag.as_str(), windows),
                ("N", vec!["CANCELLED".to_string()])
            ),
        }
    }

    let attempts_key = env
        .loaded
        .settings
        .jobs
        .lrs_aggregate
        .attempts_extension
        .clone();
    let keris = keris_attempts(&sim, &attempts_key);
    let wrong = diff(&model.keris, &keris);
    assert!(
        wrong.is_empty(),
        "KERIS differs from the LRS:\n{}",
        wrong.join("\n")
    );
    assert!(
        keris.keys().all(|g| !model.withheld.contains(&g.0)),
        "a withheld student's statement reached KERIS"
    );
    assert_only_refused_failed(&env, &model.refused).await;
    assert_deleted_students_left_nothing(&env).await;
}

/// The nightly KERIS flow runs in the seed's order, and every nightly job
/// once.
fn assert_cron_order(plan: &[(String, Vec<String>)]) {
    let jobs: Vec<&str> = plan.iter().map(|(j, _)| j.as_str()).collect();
    let at = |job: &str| {
        jobs.iter()
            .position(|j| *j == job)
            .unwrap_or_else(|| panic!("{job} not in {jobs:?}"))
    };
    assert!(at("LRS-01-001") < at("DC-01-001") && at("DC-01-001") < at("DC-01-003"));
    assert!(at("DC-01-003") < at("LMS-01-007") && at("LMS-01-007") < at("DC-01-002"));
    assert!(at("BO-01-002") < at("LRS-01-001") && at("LCMS-01-001") < at("LMS-01-003"));
    let distinct: HashSet<&&str> = jobs.iter().collect();
    assert_eq!(distinct.len(), jobs.len(), "{jobs:?}");
}

/// Every run completes, but DC-01-001 and DC-01-002 (the refused statement:
/// exit 4) and LCMS-01-001 (the shrink refused: exit 1).
fn assert_exits(runs: &[Run]) {
    let wrong: Vec<String> = runs
        .iter()
        .filter(|r| {
            let expected = match r.job.as_str() {
                "DC-01-001" | "DC-01-002" => 4,
                "LCMS-01-001" => 1,
                _ => 0,
            };
            r.exit != expected
        })
        .map(|r| format!("{} exit {} (run {})", r.job, r.exit, r.run_id))
        .collect();
    assert!(wrong.is_empty(), "unexpected exits: {wrong:?}");
}

async fn assert_lrs_details(env: &TestEnv, run: &Run, expected: &NightFigures, night: usize) {
    let d = env.details(run.run_id).await;
    let ids: BTreeSet<String> = d["undecodable"]["first_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected.undecodable, "{d}");
    assert_eq!(
        d["undecodable"]["documents"],
        expected.undecodable.len(),
        "{d}"
    );
    assert_eq!(d["withheld_statements"], expected.withheld, "{d}");
    assert_eq!(d["voiding_statements"], expected.voiding, "{d}");
    assert_eq!(
        d["voided_after_sent"]["statements"], expected.voided_after_sent,
        "{d}"
    );
    let too_late: BTreeMap<String, u64> =
        serde_json::from_value(d["too_late"]["per_day"].clone()).unwrap();
    let want: BTreeMap<String, u64> = expected
        .too_late
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(too_late, want, "{d}");
    // The data set has each kind every night (voided after sent: once a
    // night has sent what is voided).
    // (Voiding: 3 of D, and from the second night on 3 of D-1 already sent.)
    assert!(
        expected.undecodable.len() >= 3 && expected.withheld > 0,
        "{expected:?}"
    );
    assert_eq!(expected.voiding, 3 + 3 * night as u64, "{expected:?}");
    assert_eq!(expected.too_late.len(), 3, "D-8, D-9, D-10");
    assert_eq!(expected.voided_after_sent > 0, night > 0);
}

async fn assert_transfer_details(env: &TestEnv, runs: &[Run], day: &str, expected: &NightFigures) {
    let d = env.details(run_of(runs, "DC-01-001").run_id).await;
    for (base_dt, sent) in &expected.sent {
        assert_eq!(
            d["days"][base_dt.to_string()]["sent"],
            *sent,
            "{base_dt}: {d}"
        );
    }
    let sent: u64 = d["days"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["sent"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sent, expected.sent.values().sum::<u64>(), "{d}");
    assert_eq!(d["days"][day]["failed"], expected.refused, "{d}");
    let d = env.details(run_of(runs, "DC-01-002").run_id).await;
    assert_eq!(d["failed_for_good"], expected.refused, "{d}");
}

/// The night report the binary writes names what was skipped, caught up
/// and refused, with the model's figures.
fn assert_night_report(env: &TestEnv, day: &str, expected: &NightFigures) {
    let page = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("messy-{}-{day}.html", env.pg_name));
    let out = env
        .command(&["report", "--date", day, "--html", page.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = scraper::Html::parse_document(&std::fs::read_to_string(&page).unwrap());
    let text = |css: &str| -> Option<String> {
        let sel = scraper::Selector::parse(css).unwrap();
        html.select(&sel)
            .next()
            .map(|e| e.text().collect::<String>())
    };
    let figure = |css: &str| -> u64 {
        let t = text(css).unwrap_or_else(|| panic!("{day}: nothing at {css}"));
        let digits: String = t
            .rsplit(':')
            .next()
            .unwrap()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{day}: {css}: {t}"))
    };
    let exception =
        |label: &str| figure(&format!("#aggregation-exceptions span[data-k=\"{label}\"]"));
    assert_eq!(
        exception("undecodable documents skipped"),
        expected.undecodable.len() as u64
    );
    assert_eq!(
        exception("too late (past the look-back), not sent"),
        expected.too_late.values().sum::<u64>()
    );
    assert_eq!(
        exception("statements of withheld students"),
        expected.withheld
    );
    for (base_dt, sent) in &expected.sent {
        assert_eq!(
            figure(&format!(
                "#sent-per-day tr[data-day=\"{base_dt}\"] td[data-k=\"sent\"]"
            )),
            *sent,
            "{day}: sent for {base_dt}"
        );
    }
    assert_eq!(
        figure(&format!(
            "#sent-per-day tr[data-day=\"{day}\"] td[data-k=\"failed\"]"
        )),
        expected.refused
    );
}

/// LCMS-01-001 refuses to retire half the copy: FAILED with the figures,
/// the copy as it was.
async fn assert_lcms_refused(env: &TestEnv, run: &Run, copy: &[String]) {
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_msg FROM batch_job_run WHERE run_id = $1")
            .bind(run.run_id)
            .fetch_one(env.pg())
            .await
            .unwrap();
    let error = error.unwrap_or_default();
    assert_eq!(status, "FAILED", "{error}");
    assert!(
        error.contains("--allow-shrink") && error.chars().any(|c| c.is_ascii_digit()),
        "{error}"
    );
    assert_eq!(
        lcms_copy(env).await,
        copy,
        "the LMS copy of the LCMS changed"
    );
}

/// Only the refused statements failed: their error rows `FAILED` with the
/// proxy's code, their statements the only ones not `SENT` or `INVALID`.
async fn assert_only_refused_failed(env: &TestEnv, refused: &HashSet<Uuid>) {
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT statement_id, status, err_code FROM tb_dc_error_data_info WHERE base_dt >= $1",
    )
    .bind(date(D1))
    .fetch_all(env.pg())
    .await
    .unwrap();
    let failed: HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
    assert_eq!(&failed, refused, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.1 == "FAILED" && r.2 == "HTTP 413"),
        "{rows:?}"
    );
    let open: HashSet<Uuid> = crate::helpers::keris_docs(env)
        .await
        .iter()
        .filter(|d| !["SENT", "INVALID"].contains(&d.get_str("status").unwrap()))
        .map(|d| Uuid::parse_str(d.get_str("_id").unwrap()).unwrap())
        .collect();
    assert_eq!(&open, refused);
}

/// Nothing of a deleted student is left: not in the LRS (whatever form the
/// id is stored in), not in the LMS tables the data set wrote after the
/// deletion.
async fn assert_deleted_students_left_nothing(env: &TestEnv) {
    let deleted: Vec<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM tb_lms_user WHERE del_yn = 'Y'")
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert!(!deleted.is_empty());
    let forms: Vec<Bson> = deleted
        .iter()
        .flat_map(|id| {
            [
                Bson::String(id.to_string()),
                Bson::Binary(mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Uuid,
                    bytes: id.as_bytes().to_vec(),
                }),
            ]
        })
        .collect();
    let left = env
        .app
        .mongo
        .collection::<Document>(aidt_batch::contract::STATEMENTS)
        .count_documents(doc! { "user_id": { "$in": forms } })
        .await
        .unwrap();
    assert_eq!(left, 0, "statements of deleted students are left");
    for table in [
        "tb_lms_lrn_result",
        "tb_lms_lrn_session",
        "tb_lms_access_log",
        "tb_lms_login_hist",
    ] {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE user_id = ANY($1)"
        ))
        .bind(&deleted)
        .fetch_one(env.pg())
        .await
        .unwrap();
        assert_eq!(n, 0, "{table} keeps rows of deleted students");
    }
}

/// Every document of `statements` and the rows the mess touches, as text.
async fn world_text(env: &TestEnv) -> Vec<String> {
    let docs: Vec<Document> = env
        .app
        .mongo
        .collection::<Document>(aidt_batch::contract::STATEMENTS)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut text: Vec<String> = docs.into_iter().map(|d| d.to_string()).collect();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT item_id FROM tb_lcms_item
         UNION ALL SELECT content_id FROM tb_lcms_content
         UNION ALL SELECT format('%s %s %s', user_id, started_at, ended_at) FROM tb_lms_lrn_session
         UNION ALL SELECT format('%s %s %s %s', target_sys, start_dt, end_dt, status) FROM tb_bo_pm_schedule
         ORDER BY 1",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    text.extend(rows);
    text
}

#[tokio::test]
async fn the_messy_night_is_the_same_for_the_same_seed_and_refused_without_a_seeded_world() {
    let mut worlds = Vec::new();
    for _ in 0..2 {
        let env = TestEnv::new().await;
        let seed = env.run_dev(&[
            "seed",
            "--students",
            "60",
            "--statements",
            "600",
            "--date",
            D1,
            "--seed",
            SEED,
        ]);
        assert!(seed.status.success(), "{}", stderr(&seed));
        let out = env.run_dev(&["mess", "--date", D1, "--seed", SEED]);
        assert!(out.status.success(), "{}", stderr(&out));
        worlds.push((stdout(&out), world_text(&env).await));
    }
    let (report, world) = &worlds[0];
    for kind in [
        "late statements",
        "voiding statements",
        "undecodable documents",
        "LCMS source rows lost",
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("{report}"));
        assert_ne!(line.rsplit(' ').next(), Some("0"), "{report}");
    }
    assert_eq!(&worlds[1].0, report);
    assert!(
        &worlds[1].1 == world,
        "two runs with one seed wrote different data"
    );

    let empty = TestEnv::new().await;
    let out = empty.run_dev(&["mess", "--date", D1]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("run `aidt-dev seed` first"),
        "{}",
        stderr(&out)
    );
    let help = empty.run_dev(&["mess", "--help"]);
    for what in [
        "late statements",
        "voiding statements",
        "BSON UUID",
        "--proxy-statement-id",
        "LCMS source",
        "maintenance",
    ] {
        assert!(stdout(&help).contains(what), "{what}: {}", stdout(&help));
    }
}
