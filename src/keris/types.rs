//! Request and response payloads of the KERIS calls.

use std::fmt;
use std::time::Instant;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use super::options::ApiPaths;

/// One KERIS call, named as in the spec; used in logs, errors and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Api {
    /// API-001 start of learning.
    Initialized,
    /// API-002 end of learning.
    Terminated,
    /// API-003 curriculum progress.
    CurriculumProgress,
    /// API-004 curriculum completion.
    CurriculumComplete,
    /// API-005 curriculum score.
    CurriculumScore,
    /// API-006 open a transfer.
    OpenTransfer,
    /// API-007 send statements.
    SendStatements,
    /// Transfer status (resume point).
    TransferStatus,
}

impl Api {
    /// Every call, in spec order.
    pub const ALL: [Api; 8] = [
        Api::Initialized,
        Api::Terminated,
        Api::CurriculumProgress,
        Api::CurriculumComplete,
        Api::CurriculumScore,
        Api::OpenTransfer,
        Api::SendStatements,
        Api::TransferStatus,
    ];

    /// The spec's identifier: `API-001` … `API-007`, `TRANSFER-STATUS`.
    pub fn id(self) -> &'static str {
        match self {
            Api::Initialized => "API-001",
            Api::Terminated => "API-002",
            Api::CurriculumProgress => "API-003",
            Api::CurriculumComplete => "API-004",
            Api::CurriculumScore => "API-005",
            Api::OpenTransfer => "API-006",
            Api::SendStatements => "API-007",
            Api::TransferStatus => "TRANSFER-STATUS",
        }
    }

    /// The path of this call in `paths`.
    pub fn path(self, paths: &ApiPaths) -> &str {
        match self {
            Api::Initialized => &paths.initialized,
            Api::Terminated => &paths.terminated,
            Api::CurriculumProgress => &paths.curriculum_progress,
            Api::CurriculumComplete => &paths.curriculum_complete,
            Api::CurriculumScore => &paths.curriculum_score,
            Api::OpenTransfer => &paths.get_transfer_id,
            Api::SendStatements => &paths.send_statement,
            Api::TransferStatus => &paths.get_transfer_status,
        }
    }

    /// Whether this is one of the dashboard calls API-001..005.
    pub fn is_dashboard(self) -> bool {
        matches!(
            self,
            Api::Initialized
                | Api::Terminated
                | Api::CurriculumProgress
                | Api::CurriculumComplete
                | Api::CurriculumScore
        )
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A student's access token from the KERIS launch, as the LMS stored it.
/// The token is a credential: `Debug` redacts it; it is only exposed when
/// the request body is serialized.
#[derive(Clone)]
pub struct StudentAccessToken {
    /// The token itself.
    pub token: SecretString,
    /// KERIS access id that goes with the token.
    pub access_id: String,
}

impl StudentAccessToken {
    /// A token and its access id.
    pub fn new(token: impl Into<String>, access_id: impl Into<String>) -> Self {
        Self {
            token: SecretString::from(token.into()),
            access_id: access_id.into(),
        }
    }
}

impl fmt::Debug for StudentAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StudentAccessToken")
            .field("token", &"[REDACTED]")
            .field("access_id", &self.access_id)
            .finish()
    }
}

impl Serialize for StudentAccessToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("StudentAccessToken", 2)?;
        s.serialize_field("token", self.token.expose_secret())?;
        s.serialize_field("access_id", &self.access_id)?;
        s.end()
    }
}

/// Serializes a timestamp the way KERIS wants it: RFC 3339 with
/// milliseconds and an explicit offset (`2026-03-05T09:10:00.000+09:00`).
pub fn serialize_timestamp<S: Serializer>(
    t: &DateTime<FixedOffset>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_timestamp(t))
}

/// `2026-03-05T09:10:00.000+09:00`.
pub fn format_timestamp(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// API-001 body: a student started a lecture.
#[derive(Debug, Clone, Serialize)]
pub struct InitializedRequest {
    /// The student's KERIS access token.
    pub access_token: StudentAccessToken,
    /// KERIS user id of the student.
    pub user_id: Uuid,
    /// Event time.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<FixedOffset>,
    /// Lecture code from the launch.
    pub lecture_code: String,
}

/// API-002 body: a student ended a lecture.
#[derive(Debug, Clone, Serialize)]
pub struct TerminatedRequest {
    /// The student's KERIS access token.
    pub access_token: StudentAccessToken,
    /// KERIS user id of the student.
    pub user_id: Uuid,
    /// Event time.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<FixedOffset>,
    /// Lecture code from the launch.
    pub lecture_code: String,
    /// Learning time in whole seconds.
    pub duration: u64,
}

/// API-003 body: progress through a curriculum element.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressRequest {
    /// The student's KERIS access token.
    pub access_token: StudentAccessToken,
    /// KERIS user id of the student.
    pub user_id: Uuid,
    /// Event time.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<FixedOffset>,
    /// Standard-system id, e.g. `E4MATA01B01C01`.
    pub curriculum: String,
    /// Progress, 0–100.
    pub percent: f64,
}

/// API-004 body: a curriculum element completed.
#[derive(Debug, Clone, Serialize)]
pub struct CompleteRequest {
    /// The student's KERIS access token.
    pub access_token: StudentAccessToken,
    /// KERIS user id of the student.
    pub user_id: Uuid,
    /// Event time.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<FixedOffset>,
    /// Standard-system id, e.g. `E4MATA01B01C01`.
    pub curriculum: String,
}

/// API-005 body: a score on a curriculum element.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreRequest {
    /// The student's KERIS access token.
    pub access_token: StudentAccessToken,
    /// KERIS user id of the student.
    pub user_id: Uuid,
    /// Event time.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<FixedOffset>,
    /// Standard-system id, e.g. `E4MATA01B01C01`.
    pub curriculum: String,
    /// Score, 0–100.
    pub score: f64,
    /// Achievement level for the score.
    pub achievement_level: AchievementLevel,
}

/// Achievement level `A`..`E` (elementary school uses only `A`..`C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AchievementLevel {
    /// Highest level.
    A,
    /// Second level.
    B,
    /// Third level.
    C,
    /// Fourth level (middle and high school).
    D,
    /// Fifth level (middle and high school).
    E,
}

/// The envelope every KERIS answer has; what the dashboard calls return.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ApiResponse {
    /// Business code, `00000` on success.
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// API version KERIS answered with, when it says.
    #[serde(default)]
    pub api_version: Option<String>,
}

/// An open learning-history transfer (API-006). The partner access token
/// is a credential valid for this transfer only; `Debug` redacts it.
#[derive(Clone, Deserialize)]
pub struct Transfer {
    /// KERIS transfer id; not a secret, fine in logs.
    pub transfer_id: String,
    /// JWT for the `Partner-Access-Token` header of API-007.
    pub partner_access_token: SecretString,
    /// When KERIS opened the transfer (RFC 3339), as it said.
    #[serde(default)]
    pub start_time: Option<String>,
    /// When this process received the transfer, to renew it before the
    /// token's lifetime (30 minutes at the simulator) runs out.
    #[serde(skip, default = "Instant::now")]
    pub received_at: Instant,
}

impl fmt::Debug for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer")
            .field("transfer_id", &self.transfer_id)
            .field("partner_access_token", &"[REDACTED]")
            .field("start_time", &self.start_time)
            .finish()
    }
}

/// Where an interrupted transfer stands: resume at `index + 1`.
#[derive(Clone, Deserialize)]
pub struct TransferStatus {
    /// KERIS transfer id.
    pub transfer_id: String,
    /// Absolute index (1-based) of the last statement KERIS stored; `0` if none.
    #[serde(default)]
    pub index: u64,
    /// The transfer's token, when KERIS returns it.
    #[serde(default)]
    pub partner_access_token: Option<SecretString>,
}

impl TransferStatus {
    /// The index to send next.
    pub fn next_index(&self) -> u64 {
        self.index + 1
    }

    /// The transfer to keep sending on, when KERIS returned its token.
    pub fn into_transfer(self) -> Option<Transfer> {
        let token = self.partner_access_token?;
        Some(Transfer {
            transfer_id: self.transfer_id,
            partner_access_token: token,
            start_time: None,
            received_at: Instant::now(),
        })
    }
}

impl fmt::Debug for TransferStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferStatus")
            .field("transfer_id", &self.transfer_id)
            .field("index", &self.index)
            .field(
                "partner_access_token",
                &self.partner_access_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// A statement KERIS rejected within an accepted API-007 request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StatementError {
    /// Absolute index (1-based, across the transfer) of the statement.
    pub index: u64,
    /// `XAPI_VAL_ERR`, `XAPI_DUP_ERR`, `XAPI_USER_ERR`, …
    pub code: String,
    /// Why.
    #[serde(default)]
    pub message: String,
}

/// Answer to an API-007 request KERIS took (`code` `00000`), possibly with
/// some statements rejected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SendStatementsResponse {
    /// Business code, `00000`.
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// The transfer the statements went to.
    #[serde(default)]
    pub transfer_id: String,
    /// Statements rejected, by absolute index; the others were stored.
    #[serde(default)]
    pub list_error: Vec<StatementError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_offset() {
        let t = DateTime::parse_from_rfc3339("2026-03-05T09:10:00+09:00").unwrap();
        assert_eq!(format_timestamp(&t), "2026-03-05T09:10:00.000+09:00");
    }

    #[test]
    fn debug_of_tokens_and_transfers_is_redacted() {
        let token = StudentAccessToken::new("student-secret-token", "acc-1");
        assert!(!format!("{token:?}").contains("student-secret-token"));
        let transfer = Transfer {
            transfer_id: "t-1".into(),
            partner_access_token: SecretString::from("eyJ.secret.jwt"),
            start_time: None,
            received_at: Instant::now(),
        };
        assert!(!format!("{transfer:?}").contains("eyJ.secret.jwt"));
        let status = TransferStatus {
            transfer_id: "t-1".into(),
            index: 3,
            partner_access_token: Some(SecretString::from("eyJ.secret.jwt")),
        };
        assert!(!format!("{status:?}").contains("eyJ.secret.jwt"));
    }

    #[test]
    fn score_request_serializes_the_token_for_keris() {
        let req = ScoreRequest {
            access_token: StudentAccessToken::new("tok", "acc"),
            user_id: Uuid::nil(),
            timestamp: DateTime::parse_from_rfc3339("2026-03-05T09:10:00.5+09:00").unwrap(),
            curriculum: "E4MATA01B01C01".into(),
            score: 95.0,
            achievement_level: AchievementLevel::A,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["access_token"]["token"], "tok");
        assert_eq!(v["timestamp"], "2026-03-05T09:10:00.500+09:00");
        assert_eq!(v["achievement_level"], "A");
    }
}
