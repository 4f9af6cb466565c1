//! The stream-back observers on an arbitrary byte stream cut at arbitrary places:
//! the event framer hands out every byte exactly once, in order, each piece (but a
//! final flush, or an over-long event) ending where an event ends; the usage scanner
//! and the stream translators (Anthropic → OpenAI, Gemini → OpenAI, OpenAI →
//! Anthropic) never panic, whatever they are fed.
#![no_main]

use berry::adapter::StreamTranslator;
use berry::relay::stream::{EventFramer, last_event_end};
use berry::relay::usage::SseUsage;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the cut points: a cheap way to vary chunking per input.
    let Some((&seed, stream)) = data.split_first() else { return };
    let mut framer = EventFramer::default();
    let mut translators: Vec<Box<dyn StreamTranslator>> = vec![
        Box::new(berry::adapter::anthropic::stream::ToChat::new("m", true)),
        Box::new(berry::adapter::gemini::stream::ToChat::new("m", true)),
        Box::new(berry::adapter::inbound::stream::FromChat::new("m")),
    ];
    let mut translated = Vec::new();
    let mut usage = SseUsage::default();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut step = usize::from(seed % 17) + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        usage.feed(chunk);
        for t in &mut translators {
            let _ = t.feed(chunk, &mut translated);
        }
        translated.clear();
        if let Some(piece) = framer.push(Bytes::copy_from_slice(chunk)) {
            let whole = last_event_end(&piece) == Some(piece.len());
            assert!(whole || piece.len() > 256 << 10, "a partial event was handed out");
            out.extend_from_slice(&piece);
        }
        rest = tail;
        step = step * 7 % 31 + 1;
    }
    for t in &mut translators {
        let _ = t.finish(&mut translated);
    }
    if let Some(piece) = framer.finish() {
        out.extend_from_slice(&piece);
    }
    assert_eq!(out, stream, "bytes lost, repeated or reordered");
});
