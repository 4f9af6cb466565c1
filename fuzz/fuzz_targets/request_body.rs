//! The request-body parse and rewrite on arbitrary bytes. For every body it accepts:
//! the rewritten body is valid JSON, carries the new model, has no `backend`, and
//! keeps every other top-level member byte for byte.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = berry::relay::RequestBody::parse(Bytes::copy_from_slice(data)) else { return };
    let out = body.for_upstream("up\"stream\\model");
    // Valid JSON that `Value` cannot hold (a number like 1E400) is accepted and passed
    // on as written; there is nothing to compare it with here.
    let Ok(original) = serde_json::from_slice::<Value>(data) else { return };
    let rewritten: Value = serde_json::from_slice(&out).expect("the rewrite is valid JSON");
    let (Value::Object(new), Value::Object(old)) = (rewritten, original) else {
        panic!("an accepted body is an object, and so is its rewrite");
    };
    assert_eq!(new.get("model"), Some(&Value::String("up\"stream\\model".into())));
    assert!(!new.contains_key("backend"));
    for (key, value) in &old {
        if key != "model" && key != "backend" {
            assert_eq!(new.get(key), Some(value), "member {key:?} changed");
        }
    }
    assert_eq!(new.len(), old.len() - usize::from(old.contains_key("backend")));
});
