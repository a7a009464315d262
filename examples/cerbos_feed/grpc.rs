//! Cerbos's gRPC API for the feeder: the `CheckResources` request a REST
//! body stands for, as protobuf (the few messages of Cerbos's public
//! `cerbos.request.v1`, `cerbos.engine.v1` and `cerbos.response.v1`
//! packages it needs, and `google.protobuf.Value`, written out with
//! prost's derive), one call, and a closed-loop load that replays a
//! request file the way `scripts/lib/replay.lua` makes wrk replay it.
//!
//! This owns the protobuf form and the gRPC calls; it must never know the
//! directory or the policies (it translates a REST body field for field).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::bytes::BufMut;
use prost::Message;
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, Bytes};
use tonic::transport::Channel;
use tonic::Status;

const CHECK_RESOURCES: &str = "/cerbos.svc.v1.CerbosService/CheckResources";
/// `cerbos.effect.v1.Effect`.
const EFFECT_ALLOW: i32 = 1;
const EFFECT_DENY: i32 = 2;

/// The protobuf messages (field numbers as in Cerbos's public protos).
mod wire {
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckResourcesRequest {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(bool, tag = "2")]
        pub include_meta: bool,
        #[prost(message, optional, tag = "3")]
        pub principal: Option<Principal>,
        #[prost(message, repeated, tag = "4")]
        pub resources: Vec<ResourceEntry>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceEntry {
        #[prost(string, repeated, tag = "1")]
        pub actions: Vec<String>,
        #[prost(message, optional, tag = "2")]
        pub resource: Option<Resource>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Principal {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub policy_version: String,
        #[prost(string, repeated, tag = "3")]
        pub roles: Vec<String>,
        #[prost(btree_map = "string, message", tag = "4")]
        pub attr: BTreeMap<String, Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(string, tag = "1")]
        pub kind: String,
        #[prost(string, tag = "2")]
        pub policy_version: String,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(btree_map = "string, message", tag = "4")]
        pub attr: BTreeMap<String, Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckResourcesResponse {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(message, repeated, tag = "2")]
        pub results: Vec<ResultEntry>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResultEntry {
        #[prost(btree_map = "string, int32", tag = "2")]
        pub actions: BTreeMap<String, i32>,
    }

    /// `google.protobuf.Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
        pub kind: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(int32, tag = "1")]
        Null(i32),
        #[prost(double, tag = "2")]
        Number(f64),
        #[prost(string, tag = "3")]
        String(String),
        #[prost(bool, tag = "4")]
        Bool(bool),
        #[prost(message, tag = "5")]
        Struct(Struct),
        #[prost(message, tag = "6")]
        List(ListValue),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Struct {
        #[prost(btree_map = "string, message", tag = "1")]
        pub fields: BTreeMap<String, Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<Value>,
    }
}

fn value(v: &Value) -> wire::Value {
    let kind = match v {
        Value::Null => wire::Kind::Null(0),
        Value::Bool(b) => wire::Kind::Bool(*b),
        Value::Number(n) => wire::Kind::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => wire::Kind::String(s.clone()),
        Value::Array(items) => wire::Kind::List(wire::ListValue {
            values: items.iter().map(value).collect(),
        }),
        Value::Object(m) => wire::Kind::Struct(wire::Struct { fields: attrs(m) }),
    };
    wire::Value { kind: Some(kind) }
}

fn attrs(m: &serde_json::Map<String, Value>) -> BTreeMap<String, wire::Value> {
    m.iter().map(|(k, v)| (k.clone(), value(v))).collect()
}

fn text(v: &Value, at: &str) -> Result<String, String> {
    v.pointer(at)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("no {at} in {v}"))
}

fn object(v: &Value, at: &str) -> BTreeMap<String, wire::Value> {
    v.pointer(at)
        .and_then(Value::as_object)
        .map(attrs)
        .unwrap_or_default()
}

/// A REST `CheckResources` body (one resource, one action) as the
/// protobuf request, encoded, and its action.
pub fn encode(body: &str) -> Result<(Bytes, String), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{body}: {e}"))?;
    let roles = v
        .pointer("/principal/roles")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let action = text(&v, "/resources/0/actions/0")?;
    let req = wire::CheckResourcesRequest {
        request_id: String::new(),
        include_meta: false,
        principal: Some(wire::Principal {
            id: text(&v, "/principal/id")?,
            policy_version: String::new(),
            roles,
            attr: object(&v, "/principal/attr"),
        }),
        resources: vec![wire::ResourceEntry {
            actions: vec![action.clone()],
            resource: Some(wire::Resource {
                kind: text(&v, "/resources/0/resource/kind")?,
                policy_version: String::new(),
                id: text(&v, "/resources/0/resource/id")?,
                attr: object(&v, "/resources/0/resource/attr"),
            }),
        }],
    };
    Ok((Bytes::from(req.encode_to_vec()), action))
}

/// Requests go out already encoded; answers are decoded with prost.
#[derive(Clone, Copy)]
struct PreEncoded;
struct Raw;
struct Answer(PhantomData<wire::CheckResourcesResponse>);

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = wire::CheckResourcesResponse;
    type Encoder = Raw;
    type Decoder = Answer;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Answer {
        Answer(PhantomData)
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Answer {
    type Item = wire::CheckResourcesResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        wire::CheckResourcesResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

pub type Client = tonic::client::Grpc<Channel>;

pub async fn connect(addr: &str) -> Result<Client, String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| format!("gRPC {addr}: {e}"))?;
    Ok(tonic::client::Grpc::new(channel))
}

/// One call: "Allow" or "Deny" for `action`.
pub async fn decide(client: &mut Client, req: Bytes, action: &str) -> Result<&'static str, String> {
    client.ready().await.map_err(|e| e.to_string())?;
    let path = http::uri::PathAndQuery::from_static(CHECK_RESOURCES);
    let answer = client
        .unary(tonic::Request::new(req), path, PreEncoded)
        .await
        .map_err(|e| format!("CheckResources: {e}"))?
        .into_inner();
    match answer.results.first().and_then(|r| r.actions.get(action)) {
        Some(&EFFECT_ALLOW) => Ok("Allow"),
        Some(&EFFECT_DENY) => Ok("Deny"),
        other => Err(format!("CheckResources: effect {other:?} for {action}")),
    }
}

/// Closed loop: `conns` connections, one call outstanding on each, taking
/// the next request of `reqs` (from `offset`, wrapping) for `secs`; prints
/// the line `scripts/lib/replay.lua` prints for wrk (errors counted as
/// non-2xx, connection failures as socket errors).
pub async fn load(
    addr: &str,
    reqs: Vec<(Bytes, String)>,
    conns: usize,
    secs: u64,
    offset: usize,
) -> Result<(), String> {
    if reqs.is_empty() {
        return Err("no requests".into());
    }
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicUsize::new(offset % reqs.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut client = connect(addr).await?;
        let (reqs, next, stop) = (reqs.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::with_capacity(1 << 16), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let (req, action) = &reqs[next.fetch_add(1, Ordering::Relaxed) % reqs.len()];
                let t = Instant::now();
                match decide(&mut client, req.clone(), action).await {
                    Ok(_) => lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors, mut lost) = (Vec::new(), 0, 0);
    for t in tasks {
        match t.await {
            Ok((lat, e)) => {
                all.extend(lat);
                errors += e;
            }
            Err(_) => lost += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let done = all.len() as u64 + errors;
    println!(
        "WRK rps={:.1} p50_us={} p99_us={} non2xx={errors} sockerr={lost} requests={done}",
        done as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rest_body_becomes_the_same_request_in_protobuf() {
        let body = r#"{"principal":{"id":"u1","roles":["user"],"attr":{"account":"a1","is_admin":true,
            "partner":{"scopes":["users"],"verified":true}}},
            "resources":[{"actions":["view_account"],"resource":{"kind":"account","id":"a1","attr":{"name":"A"}}}]}"#;
        let (bytes, action) = encode(body).expect("encodes");
        assert_eq!(action, "view_account");
        let req = wire::CheckResourcesRequest::decode(bytes).expect("decodes");
        let p = req.principal.expect("principal");
        assert_eq!((p.id.as_str(), p.roles), ("u1", vec!["user".to_string()]));
        assert_eq!(
            p.attr.get("is_admin").and_then(|v| v.kind.clone()),
            Some(wire::Kind::Bool(true))
        );
        let Some(wire::Kind::Struct(partner)) = p.attr.get("partner").and_then(|v| v.kind.clone())
        else {
            panic!("partner is a struct");
        };
        assert_eq!(
            partner.fields.get("scopes").and_then(|v| v.kind.clone()),
            Some(wire::Kind::List(wire::ListValue {
                values: vec![wire::Value {
                    kind: Some(wire::Kind::String("users".into()))
                }]
            }))
        );
        let r = req.resources[0].resource.clone().expect("resource");
        assert_eq!((r.kind.as_str(), r.id.as_str()), ("account", "a1"));
    }
}
