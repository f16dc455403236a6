//! Property tests of crate::zeo::wire: messages round-trip through both encodings with the
//! msgid echoed exactly, and no payload or byte stream makes the decoders panic.

use proptest::prelude::*;
use zodbctl::zeo::wire::{self, Encoding, Incoming, Request, ServerMessage, Value};

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        ".{0,40}".prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![
            ".{0,8}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::List),
            proptest::collection::vec((key, inner), 0..20).prop_map(Value::Map),
        ]
    })
}

fn msgid() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..i64::MAX).prop_map(Value::Int),
        (
            proptest::collection::vec(any::<u8>(), 8),
            proptest::collection::vec(any::<u8>(), 8)
        )
            .prop_map(|(a, b)| Value::Tuple(vec![Value::Bytes(a), Value::Bytes(b)])),
    ]
}

/// What a msgpack peer sees: arrays only, decoded as tuples.
fn as_msgpack(v: &Value) -> Value {
    match v {
        Value::List(x) | Value::Tuple(x) => Value::Tuple(x.iter().map(as_msgpack).collect()),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (as_msgpack(k), as_msgpack(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn seen(enc: Encoding, v: &Value) -> Value {
    match enc {
        Encoding::Pickle => v.clone(),
        Encoding::Msgpack => as_msgpack(v),
    }
}

const ENCODINGS: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn replies_round_trip(id in msgid(), v in value()) {
        for enc in ENCODINGS {
            let bytes = wire::encode_reply(enc, &id, &v).unwrap();
            prop_assert_eq!(
                wire::decode_server_message(enc, &bytes).unwrap(),
                ServerMessage::Reply { msgid: id.clone(), value: seen(enc, &v) }
            );
            // Echo: the decoded msgid re-encodes to the same bytes.
            let bytes2 = wire::encode_reply(enc, &seen(enc, &id), &v).unwrap();
            prop_assert_eq!(bytes2, bytes);
        }
    }

    #[test]
    fn errors_and_calls_round_trip(id in msgid(), v in value(), name in "[a-zA-Z_.]{1,30}") {
        for enc in ENCODINGS {
            let bytes = wire::encode_error(enc, &id, &name, &v).unwrap();
            prop_assert_eq!(
                wire::decode_server_message(enc, &bytes).unwrap(),
                ServerMessage::Error { msgid: id.clone(), class_path: name.clone(), state: seen(enc, &v) }
            );
            let args = vec![v.clone(), Value::Int(1)];
            let bytes = wire::encode_call(enc, &name, &args).unwrap();
            let want = if name == ".reply" {
                continue;
            } else {
                ServerMessage::Call { method: name.clone(), args: args.iter().map(|a| seen(enc, a)).collect() }
            };
            prop_assert_eq!(wire::decode_server_message(enc, &bytes).unwrap(), want);
        }
    }

    #[test]
    fn requests_round_trip(id in msgid(), oneway in any::<bool>(), args in proptest::collection::vec(value(), 0..6)) {
        for enc in ENCODINGS {
            let bytes = wire::encode_request(enc, &id, oneway, "loadBefore", &args).unwrap();
            prop_assert_eq!(
                wire::decode(enc, &bytes).unwrap(),
                Incoming::Call(Request {
                    msgid: id.clone(),
                    oneway,
                    method: "loadBefore".into(),
                    args: args.iter().map(|a| seen(enc, a)).collect(),
                })
            );
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        for enc in ENCODINGS {
            let _ = wire::decode(enc, &data);
            let _ = wire::decode_server_message(enc, &data);
        }
        let _ = wire::parse_client_handshake(&data);
        let _ = wire::parse_server_announcement(&data);
        let mut with_proto = vec![0x80, 3];
        with_proto.extend_from_slice(&data);
        let _ = wire::decode(Encoding::Pickle, &with_proto);
        let mut with_array = vec![0x94];
        with_array.extend_from_slice(&data);
        let _ = wire::decode(Encoding::Msgpack, &with_array);
    }

    #[test]
    fn mutated_messages_never_panic(v in value(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        for enc in ENCODINGS {
            let mut bytes = wire::encode_request(enc, &Value::Int(3), false, "storea", std::slice::from_ref(&v)).unwrap();
            for (pos, x) in &flips {
                let n = bytes.len();
                bytes[pos % n] = *x;
            }
            let _ = wire::decode(enc, &bytes);
            bytes.truncate(bytes.len() / 2);
            let _ = wire::decode(enc, &bytes);
        }
    }

    #[test]
    fn arbitrary_streams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..64) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r: &[u8] = &data;
            for _ in 0..100 {
                match wire::read_frame(&mut r, max).await {
                    Ok(Some(f)) => assert!(f.len() <= max),
                    Ok(None) | Err(_) => break,
                }
            }
        });
    }
}
