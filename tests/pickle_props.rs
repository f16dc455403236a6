//! Property tests of crate::pickle: the encoder's output decodes to the same value, and no
//! input makes any decoding entry point panic.

use proptest::prelude::*;
use zodbctl::pickle::{self, Unpickler, Value};

fn plain_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (any::<i64>(), 1u8..4).prop_map(|(hi, extra)| {
            // An integer beyond i64: hi * 2^(8*extra) + something, stored minimally.
            let mut le = vec![0x5a; extra as usize];
            le.extend_from_slice(&hi.to_le_bytes());
            Value::BigInt(minimal(le))
        }),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        ".{0,40}".prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Dict),
        ]
    })
}

fn minimal(mut v: Vec<u8>) -> Vec<u8> {
    while v.len() > 1 {
        let (last, prev) = (v[v.len() - 1], v[v.len() - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            v.pop();
        } else {
            break;
        }
    }
    if v.len() <= 8 {
        // Fits i64 after all: the decoder returns Int for it.
        let fill = if v.last().is_some_and(|&x| x & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..v.len()].copy_from_slice(&v);
        return i64::from_le_bytes(a).to_le_bytes().to_vec();
    }
    v
}

fn normalise(v: Value) -> Value {
    match v {
        Value::BigInt(b) if b.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b);
            Value::Int(i64::from_le_bytes(a))
        }
        Value::Tuple(x) => Value::Tuple(x.into_iter().map(normalise).collect()),
        Value::List(x) => Value::List(x.into_iter().map(normalise).collect()),
        Value::Dict(x) => Value::Dict(
            x.into_iter()
                .map(|(k, v)| (normalise(k), normalise(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Opcode soup: bytes biased towards valid opcodes and small arguments.
fn opcode_soup() -> impl Strategy<Value = Vec<u8>> {
    let ops: &'static [u8] = b"(.012NIJKLMPQRSTUVXabcdeghijlopqrstu}])GBC\x80\x81\x82\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\n\x00\x01\x02";
    proptest::collection::vec(proptest::sample::select(ops), 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_round_trips(v in plain_value()) {
        let v = normalise(v);
        let bytes = pickle::dumps(&v).unwrap();
        prop_assert_eq!(pickle::loads(&bytes).unwrap(), v.clone());
        // The message subset accepts everything the encoder writes.
        prop_assert_eq!(Unpickler::new(&bytes).restrict_to_messages().load().unwrap(), v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = pickle::loads(&data);
        let _ = pickle::decode_record(&data);
        let _ = pickle::references(&data);
        let _ = pickle::record_class(&data);
        let _ = Unpickler::new(&data).restrict_to_messages().load();
    }

    #[test]
    fn opcode_soup_never_panics(mut data in opcode_soup()) {
        let _ = pickle::loads(&data);
        let _ = pickle::references(&data);
        data.insert(0, 0x80);
        data.insert(1, 3);
        let _ = pickle::loads(&data);
        let _ = pickle::decode_record(&data);
        let _ = pickle::record_class(&data);
        let _ = Unpickler::new(&data).restrict_to_messages().load();
    }
}
