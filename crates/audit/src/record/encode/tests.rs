//! The encoder against serde and the canonical hash: strings, decisions,
//! floats, and random events of every kind.

use super::*;
use serde_json::json;
use std::sync::Arc;

use crate::record::hash::{canonical, compute_hash, GENESIS_HASH};
use crate::record::{ChangeEvent, EntitySlice, Gateway, ReloadEvent, SearchEvent, Shadow};

use partnergate_policy::engine::{Decision, Effect};

#[test]
fn seal_hash_is_independent_of_key_order_and_verifies() {
    let mut m = Map::new();
    m.insert("seq".into(), Value::Null);
    m.insert("ts".into(), json!("2026-01-01T00:00:00Z"));
    m.insert("kind".into(), json!("change"));
    let (line, hash) = seal(m, 7, GENESIS_HASH);
    let parsed: Value = serde_json::from_str(&line).unwrap();
    let obj = parsed.as_object().unwrap();
    assert_eq!(obj["hash"], json!(hash));
    assert_eq!(compute_hash(obj), hash);
    // Reverse the key order: same hash.
    let rev: Map<String, Value> = obj
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(compute_hash(&rev), hash);
    // Change one value: another hash.
    let mut edited = obj.clone();
    edited.insert("seq".into(), json!(8));
    assert_ne!(compute_hash(&edited), hash);
}

#[test]
fn strings_are_written_exactly_as_serde_json_writes_them() {
    let mut cases: Vec<String> = vec![
        String::new(),
        "User::\"alice\"".into(),
        "a\\b".into(),
        "tab\there".into(),
        "é ünïcode ✓ and more than eight bytes".into(),
        "0123456789abcdef0123456789abcdef".into(),
        "\u{7f}\u{1f}".into(),
    ];
    // Each special byte at every position of a 17-byte string (the
    // eight-byte steps and the remainder).
    for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é'] {
        for i in 0..17 {
            let mut s: Vec<char> = "abcdefghijklmnopq".chars().collect();
            s[i] = special;
            cases.push(s.into_iter().collect());
        }
    }
    for s in cases {
        let mut ours = Vec::new();
        write_str(&mut ours, &s);
        assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        let naive = s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        assert_eq!(needs_escape(s.as_bytes()), naive, "{s:?}");
    }
}
#[test]
fn an_encoded_event_verifies_with_the_canonical_hash() {
    let slice = EntitySlice::new(
        json!([{"uid": {"type": "User", "id": "a\"b"}, "attrs": {"z": 1, "email": "x@y"}, "parents": []}]),
    );
    let decision = Decision {
        decision: Effect::Deny,
        reasons: vec![
            Reason {
                id: "p1".into(),
                description: Some("why \"quoted\"".into()),
            },
            Reason {
                id: "p2".into(),
                description: None,
            },
        ],
        errors: vec!["an \"error\"".into()],
        policy_version: "sha256:0".into(),
    };
    let event: Event = DecisionEvent::new(
        "User::\"a\\\"b\"",
        "Action::\"view\"",
        "Account::\"acme\"",
        slice.clone(),
        decision,
    )
    .with_decision_id("d1")
    .with_context(Some(json!({"b": [1, {"y": null, "x": "\n"}], "a": true})))
    .with_latency_us(12)
    .into();
    let mut enc = RecordEncoder::default();
    let redaction = Redaction {
        context_keys: vec![],
        entity_attrs: vec!["email".into()],
    };
    let encoded = slice.encoded(&redaction, 1);
    for field in [
        SliceField::Inline(&encoded),
        SliceField::Reference(&encoded),
    ] {
        let link = Link {
            seq: 3,
            prev_hash: GENESIS_HASH,
        };
        let hash = encode_event(
            &mut enc,
            &event,
            "2026-01-01T00:00:00.000000Z",
            Some("r1"),
            link,
            Some(field),
        )
        .to_string();
        let parsed: Map<String, Value> = serde_json::from_slice(enc.line()).unwrap();
        assert_eq!(parsed["hash"], json!(hash));
        assert_eq!(compute_hash(&parsed), hash);
        assert_eq!(parsed.keys().next().unwrap(), "seq");
        assert_eq!(parsed["entities_hash"], json!(encoded.hash));
        assert_eq!(parsed["reasons"][1], json!({"id": "p2"}));
        match field {
            SliceField::Inline(_) => {
                assert_eq!(parsed["entities"][0]["attrs"]["email"], json!("***"));
            }
            SliceField::Reference(_) => assert!(!parsed.contains_key("entities")),
        }
    }
}
/// Random events, the encoder's line against the same event built
/// through serde: equal JSON, and the hash is the canonical hash that
/// `verify` computes ([`compute_hash`], and SHA-256 of [`canonical`]).
mod encoder_property {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const CASES: usize = 3000;

    fn string(rng: &mut StdRng) -> String {
        const POOL: &[char] = &[
            'a', 'Z', '0', ' ', ':', '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{1}', '\u{1f}',
            '\u{7f}', '\u{80}', 'é', '✓', '\u{2028}', '\u{fffd}', '😀',
        ];
        let len = rng.random_range(0..24);
        (0..len)
            .map(|_| {
                if rng.random_bool(0.2) {
                    // Any scalar value.
                    loop {
                        if let Some(c) = char::from_u32(rng.random_range(0..0x11_0000)) {
                            break c;
                        }
                    }
                } else {
                    POOL[rng.random_range(0..POOL.len())]
                }
            })
            .collect()
    }

    fn opt_string(rng: &mut StdRng) -> Option<String> {
        rng.random_bool(0.5).then(|| string(rng))
    }

    fn value(rng: &mut StdRng, depth: u32) -> Value {
        let pick = if depth == 0 {
            rng.random_range(0..6)
        } else {
            rng.random_range(0..8)
        };
        match pick {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => json!(rng.random::<i64>()),
            3 => json!(rng.random::<u64>()),
            4 => serde_json::Number::from_f64(rng.random::<f64>() * 1e6 - 5e5)
                .map_or(Value::Null, Value::Number),
            5 => Value::String(string(rng)),
            6 => Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(object(rng, depth - 1)),
        }
    }

    fn object(rng: &mut StdRng, depth: u32) -> Map<String, Value> {
        (0..rng.random_range(0..5))
            .map(|_| (string(rng), value(rng, depth)))
            .collect()
    }

    fn strings(rng: &mut StdRng) -> Vec<String> {
        (0..rng.random_range(0..3)).map(|_| string(rng)).collect()
    }

    fn reasons(rng: &mut StdRng) -> Vec<Reason> {
        (0..rng.random_range(0..3))
            .map(|_| Reason {
                id: string(rng),
                description: opt_string(rng),
            })
            .collect()
    }

    fn effect(rng: &mut StdRng) -> Effect {
        if rng.random() {
            Effect::Allow
        } else {
            Effect::Deny
        }
    }

    fn to_value<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    /// A random event, and the record (without seq, ts, chain and
    /// replica) built from it through serde.
    // One arm per event kind, each listing its members: split, the
    // members of a kind would be far from each other.
    #[allow(clippy::too_many_lines)]
    fn event(rng: &mut StdRng) -> (Event, Map<String, Value>, Option<Arc<EntitySlice>>) {
        let mut m = Map::new();
        match rng.random_range(0..4) {
            0 => {
                let decision = Decision {
                    decision: effect(rng),
                    reasons: reasons(rng),
                    errors: strings(rng),
                    policy_version: string(rng),
                };
                let slice = if rng.random_bool(0.1) {
                    EntitySlice::unavailable(string(rng))
                } else {
                    EntitySlice::new(value(rng, 3))
                };
                let shadow = rng.random_bool(0.3).then(|| Shadow {
                    decision: effect(rng),
                    reasons: reasons(rng),
                    errors: strings(rng),
                    policy_version: string(rng),
                });
                let context = rng.random_bool(0.8).then(|| Value::Object(object(rng, 3)));
                let ev = DecisionEvent::new(
                    string(rng),
                    string(rng),
                    string(rng),
                    slice.clone(),
                    decision.clone(),
                )
                .with_decision_id(string(rng))
                .with_request_id(opt_string(rng))
                .with_context(context)
                .with_latency_us(rng.random())
                .with_shadow(shadow.clone())
                .with_request_entities(strings(rng))
                .with_gateway(rng.random_bool(0.3).then(|| Gateway {
                    method: string(rng),
                    path: string(rng),
                    route: string(rng),
                    source: string(rng),
                    via: string(rng),
                    dry_run: rng.random_bool(0.5),
                }));
                m.insert("kind".into(), json!("decision"));
                m.insert("decision_id".into(), json!(ev.decision_id));
                m.insert("request_id".into(), json!(ev.request_id));
                m.insert("principal".into(), json!(&*ev.principal));
                m.insert("action".into(), json!(&*ev.action));
                m.insert("resource".into(), json!(&*ev.resource));
                m.insert("context".into(), ev.context.clone());
                let hash = hex::encode(Sha256::digest(canonical(&slice.json()).as_bytes()));
                m.insert("entities_hash".into(), json!(hash));
                if let Some(e) = slice.error() {
                    m.insert("entities_error".into(), json!(e));
                }
                m.insert("decision".into(), to_value(&decision.decision));
                m.insert("reasons".into(), to_value(&decision.reasons));
                m.insert("errors".into(), to_value(&decision.errors));
                m.insert("policy_version".into(), json!(decision.policy_version));
                m.insert("latency_us".into(), json!(ev.latency_us));
                if let Some(s) = &shadow {
                    m.insert("shadow".into(), to_value(s));
                }
                if !ev.request_entities.is_empty() {
                    m.insert("request_entities".into(), to_value(&ev.request_entities));
                }
                if let Some(g) = &ev.gateway {
                    m.insert("gateway".into(), to_value(g));
                }
                (ev.into(), m, Some(slice))
            }
            1 => {
                let ev = ChangeEvent {
                    decision_id: opt_string(rng),
                    request_id: opt_string(rng),
                    actor: string(rng),
                    operation: string(rng),
                    before: value(rng, 3),
                    after: value(rng, 3),
                    change_id: None,
                    recovered: false,
                };
                m.insert("kind".into(), json!("change"));
                m.insert("decision_id".into(), json!(ev.decision_id));
                m.insert("request_id".into(), json!(ev.request_id));
                m.insert("actor".into(), json!(ev.actor));
                m.insert("operation".into(), json!(ev.operation));
                m.insert("before".into(), ev.before.clone());
                m.insert("after".into(), ev.after.clone());
                (ev.into(), m, None)
            }
            3 => {
                let ev = SearchEvent {
                    decision_id: string(rng),
                    request_id: opt_string(rng),
                    search: string(rng),
                    principal: string(rng),
                    action: string(rng),
                    resource: string(rng),
                    context: Value::Object(object(rng, 3)),
                    results: rng.random(),
                    total: rng.random_bool(0.5).then(|| rng.random()),
                    evaluated: rng.random(),
                    policy_version: string(rng),
                    latency_us: rng.random(),
                };
                m.insert("kind".into(), json!("search"));
                m.insert("decision_id".into(), json!(ev.decision_id));
                m.insert("request_id".into(), json!(ev.request_id));
                m.insert("search".into(), json!(ev.search));
                m.insert("principal".into(), json!(ev.principal));
                m.insert("action".into(), json!(ev.action));
                m.insert("resource".into(), json!(ev.resource));
                m.insert("context".into(), ev.context.clone());
                m.insert("results".into(), json!(ev.results));
                m.insert("total".into(), json!(ev.total));
                m.insert("evaluated".into(), json!(ev.evaluated));
                m.insert("policy_version".into(), json!(ev.policy_version));
                m.insert("latency_us".into(), json!(ev.latency_us));
                (ev.into(), m, None)
            }
            _ => {
                let ev = ReloadEvent {
                    request_id: opt_string(rng),
                    files: strings(rng),
                    version: opt_string(rng),
                    error: opt_string(rng),
                };
                m.insert("kind".into(), json!("reload"));
                m.insert("decision_id".into(), Value::Null);
                m.insert("request_id".into(), json!(ev.request_id));
                m.insert("files".into(), to_value(&ev.files));
                m.insert("version".into(), json!(ev.version));
                m.insert("error".into(), json!(ev.error));
                (ev.into(), m, None)
            }
        }
    }

    #[test]
    fn the_encoders_line_and_hash_are_the_serde_record_and_its_canonical_hash() {
        let mut rng = StdRng::seed_from_u64(0x5eed_0013);
        // One encoder for all cases, as the writer reuses it.
        let mut enc = RecordEncoder::default();
        for case in 0..CASES {
            let (event, mut expected, slice) = event(&mut rng);
            let seq = rng.random::<u64>() >> 1;
            let ts = string(&mut rng);
            let prev_hash = hex::encode(Sha256::digest(string(&mut rng).as_bytes()));
            let replica = opt_string(&mut rng);
            let encoded = slice.as_ref().map(|s| s.encoded(&Redaction::default(), 0));
            let field = match (&encoded, rng.random_range(0..3)) {
                (Some(e), 0) => Some(SliceField::Reference(e)),
                (Some(e), 1) => Some(SliceField::Inline(e)),
                _ => None, // a decision: inline, unredacted
            };
            if let Some(s) = &slice {
                if !matches!(field, Some(SliceField::Reference(_))) {
                    expected.insert("entities".into(), s.json().into_owned());
                }
            }
            expected.insert("seq".into(), json!(seq));
            expected.insert("ts".into(), json!(ts));
            if let Some(r) = &replica {
                expected.insert("replica".into(), json!(r));
            }
            expected.insert("prev_hash".into(), json!(prev_hash));
            let link = Link {
                seq,
                prev_hash: &prev_hash,
            };
            let hash =
                encode_event(&mut enc, &event, &ts, replica.as_deref(), link, field).to_string();
            let mut parsed: Map<String, Value> =
                serde_json::from_slice(enc.line()).unwrap_or_else(|e| {
                    panic!(
                        "case {case}: not JSON ({e}): {:?}",
                        String::from_utf8_lossy(enc.line())
                    )
                });
            assert_eq!(parsed.remove("hash"), Some(json!(hash)), "case {case}");
            assert_eq!(parsed, expected, "case {case}: {event:?}");
            assert_eq!(compute_hash(&expected), hash, "case {case}: {event:?}");
            let canonical_hash = hex::encode(Sha256::digest(
                canonical(&Value::Object(expected)).as_bytes(),
            ));
            assert_eq!(canonical_hash, hash, "case {case}");
        }
    }
}
/// `verify` re-hashes what it parses: a float must read back as the
/// same f64, or its record is taken for an edited one.
#[test]
fn a_record_with_any_float_verifies() {
    for f in [
        371_057.878_890_132_76_f64,
        0.1,
        1e-300,
        5e-324,
        f64::MAX,
        -2.5,
    ] {
        let ev: Event = ChangeEvent {
            decision_id: None,
            request_id: None,
            actor: "a".into(),
            operation: "o".into(),
            before: Value::Null,
            after: json!({"limit": f}),
            change_id: None,
            recovered: false,
        }
        .into();
        let mut enc = RecordEncoder::default();
        let link = Link {
            seq: 1,
            prev_hash: GENESIS_HASH,
        };
        let hash = encode_event(&mut enc, &ev, "t", None, link, None).to_string();
        let parsed: Map<String, Value> = serde_json::from_slice(enc.line()).unwrap();
        assert_eq!(compute_hash(&parsed), hash, "{f:e}");
    }
}
