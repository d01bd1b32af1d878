//! A load client for measuring the simulator's ingest rate: several senders,
//! each with its own transfer, sending API-007 requests back to back.
//! Used by `keris-simulator --bench-client` (see `scripts/bench-simulator`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use aidt_batch::keris::{ClientOptions, KerisClient, Partner, PARTNER_ID_EXTENSION};

/// What to send.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Statements in total.
    pub statements: u64,
    /// Statements per API-007 request.
    pub per_request: usize,
    /// Concurrent senders, one transfer each.
    pub senders: usize,
    /// Send with hand-written HTTP over one TCP connection per sender
    /// instead of [`KerisClient`], to measure the simulator rather than
    /// reqwest.
    pub raw: bool,
    /// Partner-ID to send as.
    pub partner_id: String,
}

/// What a run achieved.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Statements sent and answered.
    pub statements: u64,
    /// API-007 requests.
    pub requests: u64,
    /// Statements in `list_error` (should be 0).
    pub rejected: u64,
    /// Statement bytes sent (chunk framing and headers not counted).
    pub bytes: u64,
    /// Wall time of the sending.
    pub elapsed: Duration,
}

impl BenchReport {
    /// Statements per second.
    pub fn per_second(&self) -> f64 {
        self.statements as f64 / self.elapsed.as_secs_f64()
    }
}

/// A realistic AIDT assessment statement (≈ 1 KB) that passes the
/// simulator's profile checks.
pub fn sample_statement(id: Uuid, partner_id: &str, user: Uuid, seq: u64) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"id":"{id}","timestamp":"2026-03-05T00:00:00.000+09:00","#,
            r#""actor":{{"objectType":"Agent","account":{{"homePage":"https://textbook.vendor.example","name":"{user}"}}}},"#,
            r#""verb":{{"id":"http://aidtbook.kr/xapi/profiles/assessment/1.0/verbs/submitted","display":{{"ko-KR":"제출하다","en-US":"submitted"}}}},"#,
            r#""object":{{"id":"https://textbook.vendor.example/assessment/E4MATA01B01C01/item/{seq}","objectType":"Activity","#,
            r#""definition":{{"type":"http://aidtbook.kr/xapi/activity-type/question","name":{{"ko-KR":"문항 {seq}"}},"#,
            r#""extensions":{{"http://aidtbook.kr/xapi/profiles/assessment/1.0/activities/extensions/item-type":"multiple-choice"}}}}}},"#,
            r#""result":{{"success":true,"score":{{"scaled":0.9,"raw":90,"min":0,"max":100}},"duration":75,"#,
            r#""extensions":{{"http://aidtbook.kr/xapi/profiles/assessment/1.0/results/extensions/curriculum-standard":[{{"id":"E4MATA01B01C01","achievement-level":"A"}}]}}}},"#,
            r#""context":{{"platform":"vendor-lms","extensions":{{"{ext}":"{partner_id}"}}}}}}"#
        ),
        id = id,
        user = user,
        seq = seq,
        ext = PARTNER_ID_EXTENSION,
        partner_id = partner_id,
    )
    .into_bytes()
}

/// Sends `options.statements` statements to the simulator at `base_url`.
pub async fn run(base_url: &str, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let client = KerisClient::new(
        base_url,
        Partner::new("bench", SecretString::from(options.partner_id.clone())),
        ClientOptions {
            requests_per_second: 0.0,
            max_concurrency: options.senders.max(1),
            max_statements_per_request: options.per_request,
            ..ClientOptions::default()
        },
    )?;
    let senders = options.senders.max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let share = options.statements / senders + u64::from(s < options.statements % senders);
        let (client, options, base_url) = (client.clone(), options.clone(), base_url.to_string());
        tasks.push(tokio::spawn(async move {
            sender(client, &base_url, &options, share).await
        }));
    }
    let mut report = BenchReport {
        statements: 0,
        requests: 0,
        rejected: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (statements, requests, rejected, bytes) = task.await??;
        report.statements += statements;
        report.requests += requests;
        report.rejected += rejected;
        report.bytes += bytes;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn sender(
    client: KerisClient,
    base_url: &str,
    options: &BenchOptions,
    total: u64,
) -> anyhow::Result<(u64, u64, u64, u64)> {
    let transfer = client.open_transfer().await?;
    let user = Uuid::new_v4();
    let mut raw = if options.raw {
        let addr = base_url.trim_start_matches("http://").trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .context("connect")?;
        stream.set_nodelay(true)?;
        Some(RawSender {
            stream,
            buf: Vec::with_capacity(8192),
        })
    } else {
        None
    };
    let (mut sent, mut requests, mut rejected, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    while sent < total {
        let n = (options.per_request as u64).min(total - sent);
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|i| sample_statement(Uuid::new_v4(), &options.partner_id, user, sent + i))
            .collect();
        let chunked_index = sent + 1;
        bytes += batch.iter().map(|s| s.len() as u64).sum::<u64>();
        match &mut raw {
            None => {
                let response = client
                    .send_statements(&transfer, chunked_index, &batch)
                    .await?;
                rejected += response.list_error.len() as u64;
            }
            Some(raw) => {
                use secrecy::ExposeSecret;
                let body = raw
                    .send(
                        &options.partner_id,
                        &transfer.transfer_id,
                        transfer.partner_access_token.expose_secret(),
                        chunked_index,
                        &batch,
                    )
                    .await?;
                let response: aidt_batch::keris::SendStatementsResponse =
                    serde_json::from_slice(&body)?;
                anyhow::ensure!(
                    response.code == aidt_batch::keris::CODE_OK,
                    "answer {}",
                    response.code
                );
                rejected += response.list_error.len() as u64;
            }
        }
        sent += n;
        requests += 1;
    }
    Ok((sent, requests, rejected, bytes))
}

/// Hand-written HTTP/1.1 over one kept-alive connection.
struct RawSender {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawSender {
    async fn send(
        &mut self,
        partner_id: &str,
        transfer_id: &str,
        token: &str,
        chunked_index: u64,
        statements: &[Vec<u8>],
    ) -> anyhow::Result<Vec<u8>> {
        use std::io::Write;
        let mut out =
            Vec::with_capacity(statements.iter().map(|s| s.len() + 12).sum::<usize>() + 1024);
        write!(
            out,
            "POST /aidt_rawdata/send_statement HTTP/1.1\r\nHost: bench\r\nPartner-ID: {partner_id}\r\nAPI-version: 2.4\r\n\
             Transfer-Id: {transfer_id}\r\nPartner-Access-Token: {token}\r\nChunked-Index: {chunked_index}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )?;
        for s in statements {
            write!(out, "{:x}\r\n", s.len())?;
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        self.stream.write_all(&out).await?;

        // Answer: head up to CRLFCRLF, then Content-Length bytes.
        self.buf.clear();
        let mut tmp = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?.to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .context("no Content-Length")?
                    .trim()
                    .parse()?;
                let start = end + 4;
                while self.buf.len() < start + len {
                    let n = self.stream.read(&mut tmp).await?;
                    anyhow::ensure!(n > 0, "connection closed");
                    self.buf.extend_from_slice(&tmp[..n]);
                }
                anyhow::ensure!(
                    head.starts_with("http/1.1 200"),
                    "HTTP answer {}",
                    head.lines().next().unwrap_or("")
                );
                return Ok(self.buf[start..start + len].to_vec());
            }
            let n = self.stream.read(&mut tmp).await?;
            anyhow::ensure!(n > 0, "connection closed");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}
