//! The operator's webhook configuration ([`WebhookConfig`]): the file
//! (`DATA_DIR/webhooks.toml`, or the one `serve --webhooks` names) listing
//! the endpoints and the delivery settings, each endpoint's signing secret
//! (`whsec_` and base64, Standard Webhooks' form: a file the operator names,
//! else `DATA_DIR/webhook-secret`, created mode 0600). Only the operator's
//! file names receivers: no request can add or change one. Errors name the
//! file, the field and why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

/// The secret file made in the data directory when an endpoint names none.
pub const DEFAULT_SECRET_FILE: &str = "webhook-secret";
/// The configuration file read from the data directory when no other is named.
pub const DEFAULT_FILE: &str = "webhooks.toml";
/// The most endpoints a file may list.
pub const MAX_ENDPOINTS: usize = 16;

/// One receiver.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its name (`[a-z0-9_-]`, 1 to 64 characters): what the outbox records
    /// as done and the metrics label.
    pub name: String,
    /// Where events are POSTed (`http://host[:port]/path`).
    pub url: hyper::Uri,
    /// The HMAC-SHA256 key (the secret's base64 part, decoded).
    pub key: Vec<u8>,
}

/// How events are delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Attempts before an event is dead (a dead letter).
    pub max_attempts: u32,
    /// The first retry's pause; doubled per failure (with jitter).
    pub backoff_base: Duration,
    /// The longest pause between attempts.
    pub backoff_max: Duration,
    /// Most time to connect to an endpoint.
    pub connect_timeout: Duration,
    /// Most time for one POST, connection to response headers.
    pub timeout: Duration,
    /// Most accounts delivered at once by this process.
    pub concurrency: usize,
    /// The pause between looks at the outbox when it had nothing due.
    pub poll: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            max_attempts: 12,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            poll: Duration::from_millis(500),
        }
    }
}

/// The endpoints and how to deliver to them.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receivers, each of which gets every event.
    pub endpoints: Vec<Endpoint>,
    /// The delivery settings.
    pub delivery: Delivery,
}

/// Why the webhook configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    /// The file (or a secret file) cannot be read or made.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A field is wrong.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field (`endpoint[0].url`).
        field: String,
        /// Why.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    endpoint: Vec<EndpointFile>,
    #[serde(default)]
    delivery: DeliveryFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFile {
    name: String,
    url: String,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeliveryFile {
    max_attempts: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    timeout_ms: Option<u64>,
    concurrency: Option<usize>,
    poll_ms: Option<u64>,
}

impl WebhookConfig {
    /// Read `file` (else `data_dir/webhooks.toml`); `None` when no file is
    /// named and the default one is absent (no webhooks: events wait in
    /// the outbox).
    pub fn load(file: Option<&Path>, data_dir: &Path) -> Result<Option<Self>, WebhookConfigError> {
        let path = if let Some(f) = file {
            f.to_path_buf()
        } else {
            let p = data_dir.join(DEFAULT_FILE);
            if !p.exists() {
                return Ok(None);
            }
            p
        };
        let io = |message: String| WebhookConfigError::Io {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| io(e.to_string()))?;
        let parsed: File = toml::from_str(&text).map_err(|e| WebhookConfigError::Invalid {
            path: path.clone(),
            field: "toml".into(),
            message: e.to_string(),
        })?;
        Self::from_file(parsed, &path, data_dir).map(Some)
    }

    fn from_file(f: File, path: &Path, data_dir: &Path) -> Result<Self, WebhookConfigError> {
        Ok(WebhookConfig {
            endpoints: Self::endpoints(f.endpoint, path, data_dir)?,
            delivery: Self::delivery(&f.delivery, path)?,
        })
    }

    /// The endpoints of the file, each checked.
    fn endpoints(
        list: Vec<EndpointFile>,
        path: &Path,
        data_dir: &Path,
    ) -> Result<Vec<Endpoint>, WebhookConfigError> {
        let invalid = |field: String, message: String| WebhookConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        if list.len() > MAX_ENDPOINTS {
            return Err(invalid(
                "endpoint".into(),
                format!("at most {MAX_ENDPOINTS} endpoints"),
            ));
        }
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for (i, e) in list.into_iter().enumerate() {
            let field = |f: &str| format!("endpoint[{i}].{f}");
            let good = !e.name.is_empty()
                && e.name.len() <= 64
                && e.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !good {
                return Err(invalid(
                    field("name"),
                    "1 to 64 characters of a-z, 0-9, - and _".into(),
                ));
            }
            if endpoints.iter().any(|x| x.name == e.name) {
                return Err(invalid(field("name"), format!("`{}` twice", e.name)));
            }
            let url = endpoint_url(&e.url).map_err(|m| invalid(field("url"), m))?;
            let secret = e.secret_file.map(|p| {
                if p.is_relative() {
                    path.parent().unwrap_or(Path::new(".")).join(p)
                } else {
                    p
                }
            });
            let key = load_secret(secret.as_deref(), data_dir)?;
            endpoints.push(Endpoint {
                name: e.name,
                url,
                key,
            });
        }
        Ok(endpoints)
    }

    /// The delivery settings of the file, defaults filled, each in range.
    fn delivery(f: &DeliveryFile, path: &Path) -> Result<Delivery, WebhookConfigError> {
        let d = Delivery::default();
        let ms = Duration::from_millis;
        let delivery = Delivery {
            max_attempts: f.max_attempts.unwrap_or(d.max_attempts),
            backoff_base: f.backoff_base_ms.map_or(d.backoff_base, ms),
            backoff_max: f.backoff_max_ms.map_or(d.backoff_max, ms),
            connect_timeout: f.connect_timeout_ms.map_or(d.connect_timeout, ms),
            timeout: f.timeout_ms.map_or(d.timeout, ms),
            concurrency: f.concurrency.unwrap_or(d.concurrency),
            poll: f.poll_ms.map_or(d.poll, ms),
        };
        let checks = [
            (
                "delivery.max_attempts",
                (1..=1000).contains(&delivery.max_attempts),
            ),
            (
                "delivery.concurrency",
                (1..=1024).contains(&delivery.concurrency),
            ),
            (
                "delivery.timeout_ms",
                (1..=300_000).contains(&delivery.timeout.as_millis()),
            ),
            (
                "delivery.connect_timeout_ms",
                (1..=60_000).contains(&delivery.connect_timeout.as_millis()),
            ),
            (
                "delivery.backoff_base_ms",
                (1..=86_400_000).contains(&delivery.backoff_base.as_millis()),
            ),
            (
                "delivery.backoff_max_ms",
                delivery.backoff_max >= delivery.backoff_base
                    && delivery.backoff_max.as_millis() <= 7 * 86_400_000,
            ),
            (
                "delivery.poll_ms",
                (10..=60_000).contains(&delivery.poll.as_millis()),
            ),
        ];
        if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(WebhookConfigError::Invalid {
                path: path.to_path_buf(),
                field: (*field).into(),
                message: "out of range (see docs/events.md)".into(),
            });
        }
        Ok(delivery)
    }
}

/// An endpoint's URL: `http://` with a host, no user info, no fragment.
/// HTTPS is refused (this build has no TLS client: put a local proxy that
/// originates TLS in front, e.g. Envoy or nginx).
fn endpoint_url(text: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("https is not supported by this build (no TLS client): deliver through a local TLS-originating proxy".into())
        }
        _ => return Err("must start with http://".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("no host".into());
    };
    if authority.as_str().contains('@') {
        return Err("user info in the URL is refused".into());
    }
    if authority.host().is_empty() {
        return Err("no host".into());
    }
    if text.contains('#') {
        return Err("a fragment is refused".into());
    }
    Ok(uri)
}

/// The key of a secret file (`whsec_` and base64, 24 to 64 bytes); with no
/// file named, `data_dir/webhook-secret`, made (mode 0600) when absent.
fn load_secret(file: Option<&Path>, data_dir: &Path) -> Result<Vec<u8>, WebhookConfigError> {
    let path = file.map_or_else(|| data_dir.join(DEFAULT_SECRET_FILE), Path::to_path_buf);
    let io = |message: String| WebhookConfigError::Io {
        path: path.clone(),
        message,
    };
    if file.is_none() && !path.exists() {
        let key: [u8; 32] = rand::random();
        let text = format!(
            "whsec_{}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        partnergate_core::secret::create_private(&path, &text).map_err(|e| io(e.to_string()))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| io(e.to_string()))?;
    parse_secret(text.trim()).map_err(io)
}

/// The key of a `whsec_` secret.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    let b64 = text
        .strip_prefix("whsec_")
        .ok_or("the secret must start with whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the secret is not base64 after whsec_: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the secret's key has {} bytes: 24 to 64 are accepted",
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_endpoints() {
        assert!(endpoint_url("http://127.0.0.1:9000/hook").is_ok());
        for bad in [
            "https://example.com/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "/relative",
            "http://example.com/#frag",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_names_the_field_it_refuses_and_makes_a_private_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("webhooks.toml");
        std::fs::write(&f, "[[endpoint]]\nname = \"a\"\nurl = \"https://x/\"\n").unwrap();
        let e = WebhookConfig::load(Some(&f), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoint[0].url") && e.contains("https"), "{e}");
        std::fs::write(
            &f,
            "[[endpoint]]\nname = \"a\"\nurl = \"http://x/\"\n[delivery]\nmax_attempts = 0\n",
        )
        .unwrap();
        let e = WebhookConfig::load(Some(&f), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("delivery.max_attempts"), "{e}");
        std::fs::write(&f, "[[endpoint]]\nname = \"a\"\nurl = \"http://x/\"\n").unwrap();
        let c = WebhookConfig::load(Some(&f), dir.path()).unwrap().unwrap();
        assert_eq!(c.endpoints[0].key.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEFAULT_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The same secret the second time.
        let again = WebhookConfig::load(Some(&f), dir.path()).unwrap().unwrap();
        assert_eq!(again.endpoints[0].key, c.endpoints[0].key);
        assert!(parse_secret("whsec_c2hvcnQ=").is_err(), "too short");
        assert!(parse_secret("nope").is_err());
    }
}
