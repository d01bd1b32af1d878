//! Telling a refusal of the statements from a refusal of everything, for the
//! statement senders (DC-01-001, DC-01-002).
//!
//! KERIS, or a proxy or firewall in front of it, can refuse an API-007
//! request as a whole (an HTTP 4xx without KERIS's envelope, a business code
//! such as `40001`) without saying which statement it objects to. Either one
//! statement is to blame (a proxy's size limit, a body its firewall
//! dislikes) — then the sender splits the request until that statement is
//! alone — or the refusal has nothing to do with the statements (a firewall
//! blocking the vendor, a wrong path, a refused Partner-ID) — then every
//! request would be refused and every statement recorded as failed.
//!
//! [`Streak`] counts identical refusals (same call, same code) with no
//! acceptance in between. At `limit` of them it asks for a probe: the sender
//! sends one statement KERIS already holds (resending one is harmless: same
//! id, same content, accepted silently). Accepted → the refusals were about
//! the statements, the count starts again; refused → the refusal is
//! systemic and the sender stops ([`SystemicRefusal`]). Without a statement
//! to probe with (nothing sent yet for the partner), the sender stops once
//! `limit` single statements in a row were refused: a statement alone that
//! is refused, then its neighbour, then the next, is not one bad statement.
//! API-006 has no statements: `limit` refusals of it in a row stop at once.

use crate::keris::{Api, KerisError};

/// One whole-request refusal: what KERIS (or whatever answered) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub api: Api,
    pub http_status: u16,
    /// KERIS's business code, or `HTTP <status>` without KERIS's envelope.
    pub code: String,
    /// KERIS's message, or a short excerpt of the page (no secrets, no ids).
    pub message: String,
}

impl Refusal {
    /// The refusal `e` is, if it is one: a permanent failure of the whole
    /// call (a transient one, an expired token or a request we could not
    /// build is not).
    pub fn of(e: &KerisError) -> Option<Refusal> {
        match e {
            KerisError::Permanent {
                api,
                http_status,
                code,
                message,
            } => Some(Refusal {
                api: *api,
                http_status: *http_status,
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        }
    }

    /// Refusals alike: the same call answered with the same code (messages
    /// may differ in detail).
    fn alike(&self, other: &Refusal) -> bool {
        self.api == other.api && self.code == other.code
    }
}

/// What the sender does after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on: split the request, or hold the single statement's verdict.
    Go,
    /// Send a statement KERIS already holds, then [`Streak::probed`].
    Probe,
    /// The refusal is systemic: stop sending.
    Stop,
}

/// Identical refusals with no acceptance in between.
#[derive(Debug, Clone)]
struct Run {
    refusal: Refusal,
    requests: u32,
    /// Of them, requests of one statement (or without statements: API-006).
    singles: u32,
}

/// The count of identical refusals in a row, and what it means.
#[derive(Debug, Clone)]
pub struct Streak {
    limit: u32,
    run: Option<Run>,
}

impl Streak {
    /// `limit`: `jobs.keris_transfer.stop_after_refusals`; 0 never stops.
    pub fn new(limit: u32) -> Self {
        Self { limit, run: None }
    }

    /// KERIS took a request (`00000`, whatever `list_error` says): it
    /// accepts requests, so the refusals so far were about their statements.
    pub fn answered(&mut self) {
        self.run = None;
    }

    /// Whether refusals are pending judgement (no acceptance since).
    pub fn open(&self) -> bool {
        self.run.is_some()
    }

    /// Whether refusals can stop the sender at all (`limit` > 0).
    pub fn stops(&self) -> bool {
        self.limit > 0
    }

    /// A request of `statements` statements was refused as a whole.
    pub fn refused(&mut self, refusal: Refusal, statements: usize) -> Next {
        let single = statements <= 1;
        match &mut self.run {
            Some(run) if run.refusal.alike(&refusal) => {
                run.requests += 1;
                run.singles += u32::from(single);
                run.refusal = refusal;
            }
            _ => {
                self.run = Some(Run {
                    refusal,
                    requests: 1,
                    singles: u32::from(single),
                })
            }
        }
        let run = self.run.as_ref().expect("just set");
        if self.limit == 0 || run.requests < self.limit {
            Next::Go
        } else if run.refusal.api == Api::OpenTransfer {
            Next::Stop
        } else {
            Next::Probe
        }
    }

    /// What a probe showed: `Some(true)` KERIS took the statement it holds,
    /// `Some(false)` it refused it too, `None` no probe could be made (no
    /// statement known to KERIS, or KERIS did not answer).
    pub fn probed(&mut self, accepted: Option<bool>) -> Next {
        match accepted {
            Some(true) => {
                self.answered();
                Next::Go
            }
            Some(false) => Next::Stop,
            None => match &self.run {
                Some(run) if run.singles >= self.limit => Next::Stop,
                _ => Next::Go,
            },
        }
    }

    /// The refusal to report when the sender stops.
    pub fn systemic(&self, partner: &str) -> Option<SystemicRefusal> {
        self.run.as_ref().map(|run| SystemicRefusal {
            partner: partner.to_string(),
            requests: run.requests,
            api: run.refusal.api,
            http_status: run.refusal.http_status,
            code: run.refusal.code.clone(),
            message: crate::keris::error::excerpt(run.refusal.message.as_bytes(), &[]),
        })
    }
}

/// KERIS refused everything for a partner, whatever the requests carried:
/// the run stops and records nothing of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error(
    "KERIS refused {requests} requests in a row for partner `{partner}` alike, whatever they carried, so the refusal is not about the statements: {api} answered HTTP {http_status}, code {code}: {message}"
)]
pub struct SystemicRefusal {
    /// The partner's configuration name (never its Partner-ID).
    pub partner: String,
    pub requests: u32,
    #[serde(serialize_with = "serialize_api")]
    pub api: Api,
    pub http_status: u16,
    pub code: String,
    pub message: String,
}

fn serialize_api<S: serde::Serializer>(api: &Api, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(api.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(api: Api, code: &str) -> Refusal {
        Refusal {
            api,
            http_status: 413,
            code: code.into(),
            message: "too large".into(),
        }
    }

    #[test]
    fn refusals_alike_reach_the_limit_and_ask_for_a_probe_an_acceptance_starts_again() {
        let mut streak = Streak::new(3);
        let r = || refusal(Api::SendStatements, "HTTP 413");
        assert_eq!(streak.refused(r(), 500), Next::Go);
        assert_eq!(streak.refused(r(), 250), Next::Go);
        streak.answered();
        assert!(!streak.open());
        assert_eq!(streak.refused(r(), 125), Next::Go);
        assert_eq!(streak.refused(r(), 62), Next::Go);
        assert_eq!(streak.refused(r(), 31), Next::Probe);
        assert_eq!(streak.probed(Some(true)), Next::Go);
        assert!(!streak.open());
        assert_eq!(streak.refused(r(), 15), Next::Go);
    }

    #[test]
    fn another_code_starts_a_new_count() {
        let mut streak = Streak::new(2);
        assert_eq!(
            streak.refused(refusal(Api::SendStatements, "HTTP 413"), 2),
            Next::Go
        );
        assert_eq!(
            streak.refused(refusal(Api::SendStatements, "40001"), 2),
            Next::Go
        );
        assert_eq!(
            streak.refused(refusal(Api::SendStatements, "40001"), 1),
            Next::Probe
        );
    }

    #[test]
    fn a_refused_probe_stops_and_without_a_probe_single_statements_decide() {
        let mut streak = Streak::new(3);
        let r = || refusal(Api::SendStatements, "HTTP 403");
        for n in [500, 250] {
            assert_eq!(streak.refused(r(), n), Next::Go);
        }
        assert_eq!(streak.refused(r(), 125), Next::Probe);
        assert_eq!(streak.probed(Some(false)), Next::Stop);
        let stop = streak.systemic("demo").unwrap();
        assert_eq!((stop.requests, stop.code.as_str()), (3, "HTTP 403"));
        assert!(stop.to_string().contains("partner `demo`"), "{stop}");

        let mut streak = Streak::new(3);
        for n in [500, 250, 125] {
            streak.refused(r(), n);
        }
        assert_eq!(streak.probed(None), Next::Go, "no single statement yet");
        for _ in 0..2 {
            streak.refused(r(), 1);
            assert_eq!(streak.probed(None), Next::Go);
        }
        streak.refused(r(), 1);
        assert_eq!(streak.probed(None), Next::Stop, "three alone in a row");
    }

    #[test]
    fn api_006_refusals_stop_without_a_probe_and_zero_never_stops() {
        let mut streak = Streak::new(3);
        let r = || refusal(Api::OpenTransfer, "40101");
        assert_eq!(streak.refused(r(), 0), Next::Go);
        assert_eq!(streak.refused(r(), 0), Next::Go);
        assert_eq!(streak.refused(r(), 0), Next::Stop);
        let mut never = Streak::new(0);
        for _ in 0..100 {
            assert_eq!(never.refused(r(), 0), Next::Go);
        }
    }
}
