//! A real webhook receiver for the tests: a std `TcpListener` on a fixed
//! loopback port that answers each POST as the test's behaviour says (a
//! status, a redirect, no answer, headers trickled, an endless body), can
//! be taken down and brought back on the same port, and records every
//! request (headers, body, what it answered). Signatures are checked with
//! an HMAC-SHA256 written here over `sha2` (independent of the server's).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What the receiver does with one request.
#[derive(Debug, Clone)]
pub enum Act {
    /// Answer this status, empty body.
    Status(u16),
    /// Answer 302 to this location.
    Redirect(String),
    /// Read the request, answer nothing for a while, close.
    Hang,
    /// Send the status line, then a header byte every 200 ms (never done).
    TrickleHeaders,
    /// Answer 200 with a 10 GB `Content-Length` and write until the client goes.
    HugeBody,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub raw: Vec<u8>,
    pub body: Value,
    /// The status answered (0: none).
    pub answered: u16,
}

impl Hit {
    pub fn account(&self) -> String {
        self.body["data"]["account"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    pub fn seq(&self) -> i64 {
        self.body["data"]["account_seq"].as_i64().unwrap_or(-1)
    }
}

type Behave = dyn Fn(&Value, usize) -> Act + Send + Sync;

/// The receiver; stopped on drop.
pub struct Receiver {
    pub port: u16,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    behave: Arc<Mutex<Arc<Behave>>>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Listening on `host` (a free port), answering as `behave(body, n)`
    /// says, `n` the requests of the same `webhook-id` before this one.
    pub fn start(
        host: &str,
        behave: impl Fn(&Value, usize) -> Act + Send + Sync + 'static,
    ) -> Self {
        let first = TcpListener::bind((host, 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let r = Receiver {
            port,
            hits: Arc::default(),
            behave: Arc::new(Mutex::new(Arc::new(behave))),
            up: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (hits, behave, up, stop) = (
            r.hits.clone(),
            r.behave.clone(),
            r.up.clone(),
            r.stop.clone(),
        );
        let host = host.to_string();
        std::thread::spawn(move || {
            let mut listener = Some(first);
            while !stop.load(Ordering::Relaxed) {
                if !up.load(Ordering::Relaxed) {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                if listener.is_none() {
                    let Ok(l) = TcpListener::bind((host.as_str(), port)) else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    listener = Some(l);
                }
                let Some(l) = &listener else { continue };
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((s, _)) => {
                        let (hits, behave) = (hits.clone(), behave.lock().unwrap().clone());
                        std::thread::spawn(move || serve(s, &hits, behave.as_ref()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Answer from now on as `behave` says.
    pub fn behave(&self, behave: impl Fn(&Value, usize) -> Act + Send + Sync + 'static) {
        *self.behave.lock().unwrap() = Arc::new(behave);
    }

    /// Close the port (connections are refused) or open it again.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.answered))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut s: TcpStream, hits: &Mutex<Vec<Hit>>, behave: &Behave) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let raw = buf[head_end..head_end + len].to_vec();
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let id = header("webhook-id");
    let before = hits.lock().unwrap().iter().filter(|h| h.id == id).count();
    let act = behave(&body, before);
    let answered = match &act {
        Act::Status(c) => *c,
        Act::Redirect(_) => 302,
        Act::HugeBody => 200,
        Act::Hang | Act::TrickleHeaders => 0,
    };
    // Recorded before answering: a 2xx the client reads is always recorded.
    hits.lock().unwrap().push(Hit {
        id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        raw,
        body,
        answered,
    });
    let _ = match act {
        Act::Status(c) => write!(s, "HTTP/1.1 {c} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        Act::Redirect(to) => write!(s, "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        Act::Hang => {
            std::thread::sleep(Duration::from_secs(4));
            Ok(())
        }
        Act::TrickleHeaders => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ");
            for _ in 0..25 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b"a").is_err() {
                    break;
                }
            }
            Ok(())
        }
        Act::HugeBody => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\nConnection: close\r\n\r\n");
            let block = vec![b'x'; 64 * 1024];
            s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
            for _ in 0..160_000 {
                if s.write_all(&block).is_err() {
                    break;
                }
            }
            Ok(())
        }
    };
}

/// HMAC-SHA256 (RFC 2104) over `sha2`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Whether `hit` carries a valid Standard Webhooks signature under the
/// `whsec_` secret `secret`.
pub fn verifies(secret: &str, hit: &Hit) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim().strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut msg = format!("{}.{}.", hit.id, hit.timestamp).into_bytes();
    msg.extend_from_slice(&hit.raw);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &msg))
    );
    hit.signature.split(' ').any(|s| s == want)
}
