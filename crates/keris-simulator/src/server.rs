//! Connections, routing and the handlers of every call.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::http::{reason, BodyKind, Conn, HttpError, RequestHead, Response};
use super::state::{Fault, Item, Refusal, Shared};
use super::validate::{check_dashboard, check_statement};
use super::{DashboardEvent, Faults, RequestRecord};
use aidt_batch::keris::client::{
    HEADER_API_VERSION, HEADER_CHUNKED_INDEX, HEADER_PARTNER_ACCESS_TOKEN, HEADER_PARTNER_ID,
    HEADER_TRANSFER_ID,
};
use aidt_batch::keris::types::Api;
use aidt_batch::keris::{
    CODE_BAD_REQUEST, CODE_NOT_FOUND, CODE_OK, CODE_RATE_LIMITED, CODE_SYSTEM_ERROR,
};

/// Dashboard and status bodies are small; anything bigger is refused.
const MAX_SMALL_BODY: usize = 1024 * 1024;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                shared.count_connection();
                let (shared, cancel) = (shared.clone(), cancel.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = serve(stream, shared) => {}
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What to do after a request.
enum Outcome {
    Respond {
        response: Response,
        delay: Option<Duration>,
        close: bool,
    },
    Reset,
}

fn respond(response: Response) -> Outcome {
    Outcome::Respond {
        response,
        delay: None,
        close: false,
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut conn = Conn::new(stream);
    loop {
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                if let HttpError::Bad(_) | HttpError::HeadTooLarge = e {
                    let body =
                        envelope(CODE_BAD_REQUEST, &e.to_string(), &shared.config.api_version);
                    let _ = conn
                        .respond(
                            &Response {
                                status: 400,
                                body,
                                retry_after: None,
                            },
                            true,
                        )
                        .await;
                }
                return;
            }
        };
        if head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && conn.write_continue().await.is_err()
        {
            return;
        }
        let keep_alive = head.keep_alive();
        match handle(&mut conn, &head, &shared).await {
            Ok(Outcome::Respond {
                response,
                delay,
                close,
            }) => {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                let close = close || !keep_alive;
                if conn.respond(&response, close).await.is_err() || close {
                    return;
                }
            }
            Ok(Outcome::Reset) => {
                conn.reset();
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "KERIS simulator: connection dropped");
                return;
            }
        }
    }
}

fn envelope(code: &str, message: &str, api_version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"code": code, "message": message, "api_version": api_version}))
        .expect("json")
}

/// A business answer: HTTP 200 and `code`, plus `extra` fields.
fn answer(shared: &Shared, code: &str, message: &str, extra: Value) -> Response {
    let mut body =
        json!({"code": code, "message": message, "api_version": shared.config.api_version});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    Response {
        status: 200,
        body: serde_json::to_vec(&body).expect("json"),
        retry_after: None,
    }
}

/// What a proxy or firewall in front of KERIS answers: an HTML page, no
/// KERIS envelope. It quotes the Partner-ID header, as some error pages
/// quote the request, so a client that shows the page must mask it.
fn proxy_page(status: u16, partner: Option<&str>) -> Response {
    let title = format!("{status} {}", reason(status));
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n<body>\n<center><h1>{title}</h1></center>\n<p>Request blocked. Partner-ID: {}</p>\n<hr><center>nginx</center>\n</body>\n</html>\n",
        partner.unwrap_or("-")
    );
    Response {
        status,
        body: page.into_bytes(),
        retry_after: None,
    }
}

fn refusal(shared: &Shared, (code, message): Refusal) -> Response {
    answer(shared, code, &message, Value::Null)
}

fn code_of(response: &Response) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
    }
    serde_json::from_slice::<Code>(&response.body)
        .ok()
        .map(|c| c.code)
}

async fn handle(
    conn: &mut Conn,
    head: &RequestHead,
    shared: &Shared,
) -> Result<Outcome, HttpError> {
    let kind = match head.body_kind() {
        Ok(kind) => kind,
        Err(e) => {
            let body = envelope(CODE_BAD_REQUEST, &e.to_string(), &shared.config.api_version);
            return Ok(Outcome::Respond {
                response: Response {
                    status: 400,
                    body,
                    retry_after: None,
                },
                delay: None,
                close: true,
            });
        }
    };
    let path = head.path.trim_start_matches('/');
    if let Some(admin_path) = path.strip_prefix("_sim/") {
        return admin(conn, head, kind, admin_path, shared).await;
    }
    let received_at = Utc::now();
    let partner = head.header(HEADER_PARTNER_ID).map(str::to_ascii_lowercase);
    let partner_key = partner.clone().unwrap_or_else(|| "-".into());
    let mut record = RequestRecord {
        api: None,
        method: head.method.clone(),
        path: head.path.clone(),
        headers: head.headers.clone(),
        body: None,
        chunks: None,
        http_status: 0,
        code: None,
        received_at,
    };

    let Some(api) = shared.route(path) else {
        conn.drain_body(kind).await?;
        let response = Response {
            status: 404,
            body: envelope(CODE_NOT_FOUND, "no such path", &shared.config.api_version),
            retry_after: None,
        };
        record.http_status = 404;
        record.code = Some(CODE_NOT_FOUND.into());
        shared.record_request(&partner_key, record);
        return Ok(respond(response));
    };
    record.api = Some(api.id().to_string());

    let fault = shared.decide_fault(api, &partner_key);
    let (outcome, response) = match fault {
        Fault::Reset => {
            conn.read_part_of_body(kind).await?;
            shared.record_request(&partner_key, record);
            return Ok(Outcome::Reset);
        }
        Fault::Proxy { status } => {
            conn.drain_body(kind).await?;
            (None, proxy_page(status, partner.as_deref()))
        }
        Fault::TooMany { retry_after } => {
            conn.drain_body(kind).await?;
            let mut response = answer(shared, CODE_RATE_LIMITED, "too many requests", Value::Null);
            response.status = 429;
            response.retry_after = Some(retry_after);
            (None, response)
        }
        Fault::None | Fault::ServerError { .. } | Fault::Hang { .. } => {
            let commit = match fault {
                Fault::ServerError { stored } | Fault::Hang { stored, .. } => stored,
                _ => true,
            };
            let mut response = if head.method != "POST" {
                conn.drain_body(kind).await?;
                let mut r = answer(shared, CODE_BAD_REQUEST, "use POST", Value::Null);
                r.status = 405;
                r
            } else if api == Api::SendStatements {
                let (response, chunks) =
                    send_statements(conn, head, kind, shared, partner.as_deref(), commit).await?;
                record.chunks = Some(chunks);
                response
            } else {
                let body = conn.read_body(kind, MAX_SMALL_BODY).await?;
                if let Some(body) = &body {
                    record.body = serde_json::from_slice(body).ok();
                }
                small_call(
                    api,
                    head,
                    body,
                    shared,
                    partner.as_deref(),
                    commit,
                    received_at,
                )
            };
            match fault {
                Fault::ServerError { .. } => {
                    response = answer(
                        shared,
                        CODE_SYSTEM_ERROR,
                        "injected system error",
                        Value::Null,
                    );
                    response.status = 500;
                    (None, response)
                }
                Fault::Hang { secs, stored } => {
                    if !stored {
                        response = answer(
                            shared,
                            CODE_SYSTEM_ERROR,
                            "injected hang, not processed",
                            Value::Null,
                        );
                        response.status = 503;
                    }
                    let delay = Duration::from_secs_f64(secs.max(0.0));
                    (Some(delay), response)
                }
                _ => (None, response),
            }
        }
    };
    record.http_status = response.status;
    record.code = code_of(&response);
    shared.record_request(&partner_key, record);
    Ok(Outcome::Respond {
        response,
        delay: outcome,
        close: false,
    })
}

/// Checks common to every call: Partner-ID and API-version.
fn check_common(head: &RequestHead, shared: &Shared, partner: Option<&str>) -> Result<(), Refusal> {
    shared.check_partner(partner)?;
    if head.header(HEADER_API_VERSION).is_none_or(str::is_empty) {
        return Err((CODE_BAD_REQUEST, "API-version header missing".into()));
    }
    Ok(())
}

fn is_json(head: &RequestHead) -> bool {
    head.header("content-type")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"))
}

/// API-001..006 and transfer status: small bodies read whole.
fn small_call(
    api: Api,
    head: &RequestHead,
    body: Option<Vec<u8>>,
    shared: &Shared,
    partner: Option<&str>,
    commit: bool,
    received_at: chrono::DateTime<Utc>,
) -> Response {
    let result = (|| {
        check_common(head, shared, partner)?;
        let partner = partner.expect("checked");
        let body = body.ok_or((CODE_BAD_REQUEST, "body too large".to_string()))?;
        if !body.is_empty() && !is_json(head) {
            return Err((
                CODE_BAD_REQUEST,
                "Content-Type must be application/json".into(),
            ));
        }
        match api {
            Api::OpenTransfer => {
                let (id, token, start) = shared.open_transfer(partner, commit);
                Ok(json!({"transfer_id": id, "partner_access_token": token, "start_time": start}))
            }
            Api::TransferStatus => {
                #[derive(serde::Deserialize)]
                struct StatusBody {
                    transfer_id: String,
                }
                let req: StatusBody = serde_json::from_slice(&body)
                    .map_err(|e| (CODE_BAD_REQUEST, format!("bad body: {e}")))?;
                let (index, token) = shared.transfer_status(partner, &req.transfer_id)?;
                Ok(
                    json!({"transfer_id": req.transfer_id, "index": index, "partner_access_token": token}),
                )
            }
            _ => {
                let (value, user_id) =
                    check_dashboard(api, &body).map_err(|m| (CODE_BAD_REQUEST, m))?;
                if commit {
                    shared.record_dashboard(DashboardEvent {
                        api: api.id().into(),
                        partner_id: partner.into(),
                        user_id,
                        body: value,
                        received_at,
                    });
                }
                Ok(Value::Null)
            }
        }
    })();
    match result {
        Ok(extra) => answer(shared, CODE_OK, "success", extra),
        Err(refused) => refusal(shared, refused),
    }
}

/// API-007: the body is read chunk by chunk, each chunk checked as one
/// statement. Returns the answer and the number of chunks read.
async fn send_statements(
    conn: &mut Conn,
    head: &RequestHead,
    kind: BodyKind,
    shared: &Shared,
    partner: Option<&str>,
    commit: bool,
) -> Result<(Response, u64), HttpError> {
    let checks = (|| {
        check_common(head, shared, partner)?;
        let partner = partner.expect("checked");
        let transfer_id = head.header(HEADER_TRANSFER_ID);
        shared.check_transfer(
            partner,
            transfer_id,
            head.header(HEADER_PARTNER_ACCESS_TOKEN),
        )?;
        let index = head
            .header(HEADER_CHUNKED_INDEX)
            .ok_or((CODE_BAD_REQUEST, "Chunked-Index header missing".to_string()))?
            .parse::<u64>()
            .ok()
            .filter(|i| *i >= 1)
            .ok_or((
                CODE_BAD_REQUEST,
                "Chunked-Index is not a positive integer".to_string(),
            ))?;
        if kind != BodyKind::Chunked {
            return Err((
                CODE_BAD_REQUEST,
                "API-007 needs Transfer-Encoding: chunked".into(),
            ));
        }
        Ok((partner, transfer_id.expect("checked"), index))
    })();
    let (partner, transfer_id, chunked_index) = match checks {
        Ok(ok) => ok,
        Err(refused) => {
            let chunks = count_and_drain(conn, kind).await?;
            return Ok((refusal(shared, refused), chunks));
        }
    };

    let config = &shared.config;
    let now = Utc::now();
    let reject_users = shared.rejects_users();
    let mut items = Vec::with_capacity(config.max_statements_per_request.min(1024));
    let (mut chunks, mut bytes) = (0u64, 0usize);
    let mut over: Option<String> = None;
    loop {
        let size = conn.chunk_size().await?;
        if size == 0 {
            break;
        }
        chunks += 1;
        bytes += size;
        if over.is_none() && chunks as usize > config.max_statements_per_request {
            over = Some(format!(
                "more than {} statements in one request",
                config.max_statements_per_request
            ));
        }
        if over.is_none() && bytes > config.max_request_bytes {
            over = Some(format!(
                "more than {} bytes in one request",
                config.max_request_bytes
            ));
        }
        if over.is_some() {
            conn.skip_chunk(size).await?;
            continue;
        }
        conn.read_chunk(size).await?;
        let data = conn.chunk(size);
        let verdict = check_statement(data, partner, now);
        let bytes = (config.record_statements && verdict.is_ok()).then(|| Box::from(data));
        let user = if reject_users && verdict.is_ok() {
            actor_name(data)
        } else {
            None
        };
        items.push(Item {
            verdict,
            bytes,
            user,
        });
        conn.end_chunk(size);
    }
    if let Some(status) = shared.proxy_refuses(&items) {
        return Ok((proxy_page(status, Some(partner)), chunks));
    }
    if let Some(message) = over {
        shared
            .apply_statements(
                partner,
                transfer_id,
                chunked_index,
                chunks,
                Vec::new(),
                false,
            )
            .ok();
        return Ok((
            answer(shared, CODE_BAD_REQUEST, &message, Value::Null),
            chunks,
        ));
    }
    if items.is_empty() {
        return Ok((
            answer(
                shared,
                CODE_BAD_REQUEST,
                "no statements in the body",
                Value::Null,
            ),
            chunks,
        ));
    }
    let response =
        match shared.apply_statements(partner, transfer_id, chunked_index, chunks, items, commit) {
            Ok(list_error) => answer(
                shared,
                CODE_OK,
                "success",
                json!({"transfer_id": transfer_id, "list_error": list_error}),
            ),
            Err(refused) => refusal(shared, refused),
        };
    Ok((response, chunks))
}

async fn count_and_drain(conn: &mut Conn, kind: BodyKind) -> Result<u64, HttpError> {
    match kind {
        BodyKind::Length(_) => conn.drain_body(kind).await.map(|_| 0),
        BodyKind::Chunked => {
            let mut chunks = 0;
            loop {
                let size = conn.chunk_size().await?;
                if size == 0 {
                    return Ok(chunks);
                }
                chunks += 1;
                conn.skip_chunk(size).await?;
            }
        }
    }
}

/// `/_sim/…` operator endpoints.
async fn admin(
    conn: &mut Conn,
    head: &RequestHead,
    kind: BodyKind,
    path: &str,
    shared: &Shared,
) -> Result<Outcome, HttpError> {
    let body = conn.read_body(kind, MAX_SMALL_BODY).await?;
    let limit = head
        .query_param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100);
    let ok = |value: Value| Response {
        status: 200,
        body: serde_json::to_vec(&value).expect("json"),
        retry_after: None,
    };
    let error = |status: u16, message: String| Response {
        status,
        body: serde_json::to_vec(&json!({"error": message})).expect("json"),
        retry_after: None,
    };
    let response = match (head.method.as_str(), path.trim_end_matches('/')) {
        ("GET", "stats") => ok(json!(shared.stats())),
        ("GET", "statements") => ok(json!({"statements": shared.statements(limit)})),
        ("GET", "dashboard") => ok(json!({"events": shared.dashboard_events(limit)})),
        ("GET", "requests") => ok(json!({"requests": shared.requests(limit)})),
        ("GET", "faults") => ok(json!(shared.faults())),
        ("POST", "faults") => match body.as_deref().map(serde_json::from_slice::<Faults>) {
            Some(Ok(faults)) => {
                shared.set_faults(faults);
                ok(json!(shared.faults()))
            }
            Some(Err(e)) => error(400, format!("bad faults: {e}")),
            None => error(413, "body too large".into()),
        },
        ("POST", "reset") => {
            shared.reset();
            ok(json!({"reset": true}))
        }
        _ => error(
            404,
            format!("no operator endpoint {} /_sim/{path}", head.method),
        ),
    };
    Ok(respond(response))
}

/// `actor.account.name` of a statement, if it has one.
fn actor_name(statement: &[u8]) -> Option<Box<str>> {
    #[derive(serde::Deserialize)]
    struct Head {
        actor: Option<Actor>,
    }
    #[derive(serde::Deserialize)]
    struct Actor {
        account: Option<Account>,
    }
    #[derive(serde::Deserialize)]
    struct Account {
        name: Option<String>,
    }
    let head: Head = serde_json::from_slice(statement).ok()?;
    head.actor?.account?.name.map(String::into_boxed_str)
}
