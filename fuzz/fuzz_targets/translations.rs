//! The request and answer translations on arbitrary JSON: OpenAI chat → Anthropic and
//! Gemini requests, Anthropic messages → OpenAI chat, and every answer translation.
//! Whatever the JSON, they answer (a translation or an error) and never panic.
#![no_main]

use berry::adapter::{anthropic, gemini, inbound};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    let _ = anthropic::request::from_chat(&v, "m", true);
    let _ = gemini::request::from_chat(&v);
    let _ = inbound::request::to_chat(&v);
    let _ = anthropic::response::to_chat(&v, "m");
    let _ = gemini::response::to_chat(&v, "m");
    let _ = inbound::from_chat(&v, "m");
});
