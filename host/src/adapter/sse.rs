//! An incremental server-sent-events parser for the translators: bytes in, cut at any
//! place, whole events out. Memory is bounded: an event larger than [`MAX_EVENT`] is
//! a fault, not a reason to grow without end.

use super::{StreamFault, StreamTranslator};
use crate::health::ErrorClass;

/// Largest event a translator accepts (a tool call's arguments arrive in many small
/// events; a whole message never comes as one).
pub const MAX_EVENT: usize = 4 << 20;

#[derive(Default)]
pub struct SseParser {
    /// The current line, until its end arrives.
    line: Vec<u8>,
    /// `event:` of the event being read.
    event: String,
    /// `data:` lines of the event being read, joined by "\n".
    data: Vec<u8>,
    has_data: bool,
    /// The last byte was a CR (a CRLF may be split across chunks).
    after_cr: bool,
}

impl SseParser {
    /// Feed bytes; `on_event(event name, data)` is called for every event completed.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(&str, &[u8]) -> Result<(), StreamFault>,
    ) -> Result<(), StreamFault> {
        for &b in chunk {
            if self.after_cr && b == b'\n' {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                self.end_line(&mut on_event)?;
            } else {
                if self.line.len() + self.data.len() >= MAX_EVENT {
                    return Err(StreamFault {
                        class: ErrorClass::Network,
                        message: format!("an upstream event exceeds {MAX_EVENT} bytes"),
                    });
                }
                self.line.push(b);
            }
        }
        Ok(())
    }

    /// The stream ended: an event without its closing blank line still counts.
    pub fn finish(
        &mut self,
        mut on_event: impl FnMut(&str, &[u8]) -> Result<(), StreamFault>,
    ) -> Result<(), StreamFault> {
        if !self.line.is_empty() {
            self.end_line(&mut on_event)?;
        }
        self.end_line(&mut on_event)
    }

    fn end_line(
        &mut self,
        on_event: &mut impl FnMut(&str, &[u8]) -> Result<(), StreamFault>,
    ) -> Result<(), StreamFault> {
        if self.line.is_empty() {
            // A blank line dispatches the event.
            if self.has_data {
                let result = on_event(&self.event, &self.data);
                self.data.clear();
                self.has_data = false;
                self.event.clear();
                return result;
            }
            self.event.clear();
            return Ok(());
        }
        let line = std::mem::take(&mut self.line);
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return self.restore(line), // a comment
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
        self.restore(line)
    }

    /// Give the line buffer back (its capacity is reused).
    fn restore(&mut self, mut line: Vec<u8>) -> Result<(), StreamFault> {
        line.clear();
        self.line = line;
        Ok(())
    }
}

/// The per-event half of a translator whose input is server-sent events: what each
/// event's data becomes, and what the end of the input means.
pub trait SseEvents: Send {
    /// Translate one event's data into `out`.
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault>;
    /// The input ended and every event was delivered: append what closes the output,
    /// or say why the stream ended too soon.
    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFault>;
}

/// A stream translator: the SSE parser cutting the input into events, and the
/// provider-specific [`SseEvents`] translating each.
pub struct SseTranslator<E> {
    sse: SseParser,
    events: E,
}

impl<E: SseEvents> SseTranslator<E> {
    pub fn over(events: E) -> Self {
        SseTranslator { sse: SseParser::default(), events }
    }
}

impl<E: SseEvents> StreamTranslator for SseTranslator<E> {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFault> {
        let events = &mut self.events;
        self.sse.feed(chunk, |_, data| events.event(data, out))
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFault> {
        let events = &mut self.events;
        self.sse.finish(|_, data| events.event(data, out))?;
        events.end(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8], split: usize) -> Vec<(String, String)> {
        let mut p = SseParser::default();
        let mut seen = Vec::new();
        for piece in input.chunks(split.max(1)) {
            p.feed(piece, |e, d| {
                seen.push((e.to_string(), String::from_utf8_lossy(d).into_owned()));
                Ok(())
            })
            .expect("feed");
        }
        p.finish(|e, d| {
            seen.push((e.to_string(), String::from_utf8_lossy(d).into_owned()));
            Ok(())
        })
        .expect("finish");
        seen
    }

    #[test]
    fn events_come_out_whole_however_the_bytes_are_cut() {
        let input = b": comment\nevent: message_start\ndata: {\"a\":1}\n\nevent: ping\r\ndata: {}\r\n\r\ndata: x\ndata: y\n\ndata: last";
        let expected = vec![
            ("message_start".to_string(), "{\"a\":1}".to_string()),
            ("ping".to_string(), "{}".to_string()),
            (String::new(), "x\ny".to_string()),
            (String::new(), "last".to_string()),
        ];
        for split in 1..=input.len() {
            assert_eq!(events(input, split), expected, "split every {split} bytes");
        }
    }
}
