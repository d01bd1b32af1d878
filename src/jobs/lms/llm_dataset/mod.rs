//! LMS-01-009 ([`upload`]) and its parts: its settings and the sink the
//! dataset streams into (an S3 multipart upload, or a file under a
//! directory), which never leaves a partial object under the final key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use upload::ID;

pub mod upload;

/// S3 refuses parts under 5 MiB (but the last).
const MIN_PART_SIZE_MIB: u32 = 5;

/// `[jobs.lms_01_009]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmDatasetSettings {
    /// The HMAC-SHA256 key of the student pseudonyms
    /// (`AIDT__JOBS__LMS_01_009__PSEUDONYM_KEY`). A new key gives every
    /// student a new pseudonym.
    pub pseudonym_key: Option<SecretString>,
    /// Key prefix of the objects (and directory under `--output-dir`).
    pub prefix: String,
    /// Multipart part size in MiB (at least 5, S3's minimum).
    pub part_size_mib: u32,
    /// Parts uploaded at once; memory is about (this + 1) × the part size.
    pub parts_in_flight: usize,
    pub s3: S3Settings,
}

impl Default for LlmDatasetSettings {
    fn default() -> Self {
        Self {
            pseudonym_key: None,
            prefix: "llm-dataset".into(),
            part_size_mib: 8,
            parts_in_flight: 2,
            s3: S3Settings::default(),
        }
    }
}

/// `[jobs.lms_01_009.s3]`: S3-compatible object storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// e.g. `https://s3.ap-northeast-2.amazonaws.com`, or a MinIO/Ceph URL.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: Option<String>,
    pub access_key_id: Option<SecretString>,
    pub secret_access_key: Option<SecretString>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint (a loopback test server).
    pub allow_http: bool,
    /// Retries of a failed request (transport errors, 5xx), with backoff.
    pub max_retries: usize,
    pub request_timeout_secs: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "ap-northeast-2".into(),
            bucket: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
            allow_http: false,
            max_retries: 3,
            request_timeout_secs: 60,
        }
    }
}

fn validate_settings(section: config::Value) -> Result<(), String> {
    let settings: LlmDatasetSettings = section.try_deserialize().map_err(|e| e.to_string())?;
    if settings.part_size_mib < MIN_PART_SIZE_MIB {
        return Err(format!(
            "part_size_mib: must be at least {MIN_PART_SIZE_MIB} (S3's smallest part)"
        ));
    }
    if settings.parts_in_flight == 0 {
        return Err("parts_in_flight: must be at least 1".into());
    }
    if settings.prefix.trim_matches('/').is_empty() {
        return Err("prefix: must not be empty".into());
    }
    Ok(())
}

/// Where the dataset goes.
enum Sink {
    File {
        file: tokio::fs::File,
        partial: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    S3 {
        store: Arc<dyn ObjectStore>,
        upload: Option<WriteMultipart>,
        parts_in_flight: usize,
        endpoint: String,
        bucket: String,
        key: String,
    },
}

impl Sink {
    async fn file(root: &Path, key: &str) -> anyhow::Result<Self> {
        let target = root.join(key);
        let parent = target.parent().expect("a key has a directory");
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("{ID}: Failed to create {}", parent.display()))?;
        let partial = target.with_extension("gz.partial");
        let file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("{ID}: Failed to create {}", partial.display()))?;
        Ok(Sink::File {
            file,
            partial,
            target,
            root: root.to_path_buf(),
        })
    }

    async fn s3(settings: &LlmDatasetSettings, key: &str) -> anyhow::Result<Self> {
        let s3 = &settings.s3;
        let missing = |name: &str| {
            format!(
                "{ID}: [jobs.lms_01_009.s3] {name} is not set (AIDT__JOBS__LMS_01_009__S3__{}), \
                 and no --output-dir was given",
                name.to_ascii_uppercase()
            )
        };
        let endpoint = s3.endpoint.clone().with_context(|| missing("endpoint"))?;
        let bucket = s3.bucket.clone().with_context(|| missing("bucket"))?;
        let key_id = s3
            .access_key_id
            .as_ref()
            .with_context(|| missing("access_key_id"))?;
        let secret = s3
            .secret_access_key
            .as_ref()
            .with_context(|| missing("secret_access_key"))?;
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_region(&s3.region)
            .with_bucket_name(&bucket)
            .with_access_key_id(key_id.expose_secret())
            .with_secret_access_key(secret.expose_secret())
            .with_virtual_hosted_style_request(!s3.path_style)
            .with_retry(RetryConfig {
                max_retries: s3.max_retries,
                retry_timeout: Duration::from_secs(s3.request_timeout_secs * 2),
                ..RetryConfig::default()
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(Duration::from_secs(s3.request_timeout_secs)),
            )
            // After the client options, which would reset it.
            .with_allow_http(s3.allow_http)
            .build()
            .map_err(|e| anyhow::anyhow!("{ID}: S3 endpoint {endpoint} bucket {bucket}: {e}"))?;
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        let location = ObjectPath::from(key);
        let upload = store.put_multipart(&location).await.map_err(|e| {
            anyhow::anyhow!(
                "{ID}: Failed to start the upload of {key} to endpoint {endpoint} bucket {bucket}: {e}"
            )
        })?;
        let part_size = settings.part_size_mib as usize * 1024 * 1024;
        Ok(Sink::S3 {
            store,
            upload: Some(WriteMultipart::new_with_chunk_size(upload, part_size)),
            parts_in_flight: settings.parts_in_flight,
            endpoint,
            bucket,
            key: key.to_string(),
        })
    }

    fn describe(&self) -> String {
        match self {
            Sink::File { target, .. } => target.display().to_string(),
            Sink::S3 {
                endpoint,
                bucket,
                key,
                ..
            } => format!("s3://{bucket}/{key} at {endpoint}"),
        }
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> anyhow::Error {
        match self {
            Sink::File { partial, .. } => {
                anyhow::anyhow!("{ID}: Failed to {what} {}: {e}", partial.display())
            }
            Sink::S3 {
                endpoint,
                bucket,
                key,
                ..
            } => anyhow::anyhow!(
                "{ID}: Failed to {what} {key} to endpoint {endpoint} bucket {bucket}: {e}"
            ),
        }
    }

    async fn write(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Sink::File { file, .. } => {
                use tokio::io::AsyncWriteExt as _;
                if let Err(e) = file.write_all(&chunk).await {
                    return Err(self.failed("write", e));
                }
            }
            Sink::S3 {
                upload,
                parts_in_flight,
                ..
            } => {
                let upload = upload.as_mut().expect("upload open until finished");
                upload.put(chunk.into());
                // Bounded memory: wait while too many parts are in flight.
                let limit = *parts_in_flight;
                if let Err(e) = upload.wait_for_capacity(limit).await {
                    return Err(self.failed("upload", e));
                }
            }
        }
        Ok(())
    }

    /// Makes the object visible under its final key.
    async fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::File {
                file,
                partial,
                target,
                ..
            } => {
                let synced = file.sync_all().await;
                let renamed = match synced {
                    Ok(()) => tokio::fs::rename(&*partial, &*target).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = renamed {
                    let _ = tokio::fs::remove_file(&*partial).await;
                    return Err(self.failed("complete", e));
                }
            }
            Sink::S3 { upload, .. } => {
                let upload = upload.take().expect("upload open until finished");
                if let Err(e) = upload.finish().await {
                    // finish() aborts the multipart upload itself on error.
                    return Err(self.failed("complete the upload of", e));
                }
            }
        }
        Ok(())
    }

    /// Drops what was written: nothing appears under the final key.
    async fn abort(&mut self) {
        match self {
            Sink::File { partial, .. } => {
                let _ = tokio::fs::remove_file(&*partial).await;
            }
            Sink::S3 { upload, .. } => {
                if let Some(upload) = upload.take() {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(error = %e, "could not abort the multipart upload; a lifecycle rule must remove it");
                    }
                }
            }
        }
    }

    async fn put_manifest(&mut self, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Sink::File { root, .. } => {
                let target = root.join(key);
                let partial = target.with_extension("json.partial");
                tokio::fs::write(&partial, &body)
                    .await
                    .with_context(|| format!("{ID}: Failed to write {}", partial.display()))?;
                tokio::fs::rename(&partial, &target)
                    .await
                    .with_context(|| format!("{ID}: Failed to write {}", target.display()))?;
            }
            Sink::S3 { store, .. } => {
                store
                    .put(&ObjectPath::from(key), PutPayload::from(body))
                    .await
                    .map_err(|e| self.failed("upload the manifest", e))?;
            }
        }
        Ok(())
    }
}
