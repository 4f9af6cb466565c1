//! The per-request log line, formatted by hand: the same fields (and the same shape,
//! text or JSON) as `tracing`'s formatter would give, at a fraction of its cost,
//! straight into the output buffer. Filtering still follows `RUST_LOG` (target
//! `berry::request`, level info).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::OUTPUT;

/// What one request's line says. Never a token or a key: ids and names only.
pub struct RequestLine<'a> {
    pub request_id: &'a str,
    pub client: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub user: &'a str,
    pub model: &'a str,
    pub backend: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    pub first_byte_ms: Option<f64>,
    pub attempts: u32,
    pub stream: bool,
    pub error: &'a str,
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    /// The formatted date and time of the last second a line was written in.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Write `line` to the log. `false`: the binary's output is not set up (tests,
/// benches): the caller logs it through `tracing` instead.
pub fn request_line(line: &RequestLine<'_>) -> bool {
    let Some(output) = OUTPUT.get() else { return false };
    if !tracing::enabled!(target: "berry::request", tracing::Level::INFO) {
        return true;
    }
    BUFFER.with(|buffer| {
        let mut out = buffer.borrow_mut();
        out.clear();
        timestamp(&mut out);
        if output.json {
            json(line, &mut out)
        } else {
            text(line, &mut out)
        }
        output.sink.write_line(&out);
    });
    true
}

/// RFC 3339 UTC with microseconds, as `tracing` writes it.
fn timestamp(out: &mut Vec<u8>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != now.as_secs() {
            *second = (now.as_secs(), date_time(now.as_secs()));
        }
        out.extend_from_slice(second.1.as_bytes());
    });
    out.push(b'.');
    let micros = now.subsec_micros();
    for shift in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(b'0' + (micros / shift % 10) as u8);
    }
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (proleptic Gregorian calendar).
fn date_time(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Days to civil date (Howard Hinnant's algorithm), for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `  INFO berry::request: key=value …` after the timestamp; strings quoted as
/// `tracing` quotes them.
fn text(l: &RequestLine<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"  INFO berry::request: request_id=");
    quoted(out, l.request_id);
    out.extend_from_slice(b" client=");
    address(out, l.client);
    out.extend_from_slice(b" method=");
    out.extend_from_slice(l.method.as_bytes());
    out.extend_from_slice(b" path=");
    out.extend_from_slice(l.path.as_bytes());
    out.extend_from_slice(b" user=");
    quoted(out, l.user);
    out.extend_from_slice(b" model=");
    quoted(out, l.model);
    out.extend_from_slice(b" backend=");
    quoted(out, l.backend);
    out.extend_from_slice(b" status=");
    integer(out, l.status.into());
    out.extend_from_slice(b" latency_ms=");
    hundredths(out, l.latency_ms);
    out.extend_from_slice(b" first_byte_ms=");
    match l.first_byte_ms {
        Some(ms) => hundredths(out, ms),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" attempts=");
    integer(out, l.attempts.into());
    out.extend_from_slice(if l.stream { b" stream=true error=" } else { b" stream=false error=" });
    quoted(out, l.error);
    out.push(b'\n');
}

fn json(l: &RequestLine<'_>, out: &mut Vec<u8>) {
    // The timestamp was written first: wrap it.
    let stamp = std::mem::take(out);
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(&stamp);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"berry::request\"");
    for (key, value) in [("request_id", l.request_id), ("method", l.method), ("path", l.path)] {
        string_field(out, key, value);
    }
    out.extend_from_slice(b",\"client\":\"");
    address(out, l.client);
    out.push(b'"');
    for (key, value) in [("user", l.user), ("model", l.model), ("backend", l.backend)] {
        string_field(out, key, value);
    }
    out.extend_from_slice(b",\"status\":");
    integer(out, l.status.into());
    out.extend_from_slice(b",\"latency_ms\":");
    hundredths(out, l.latency_ms);
    out.extend_from_slice(b",\"first_byte_ms\":");
    match l.first_byte_ms {
        Some(ms) => hundredths(out, ms),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"attempts\":");
    integer(out, l.attempts.into());
    out.extend_from_slice(if l.stream { b",\"stream\":true" } else { b",\"stream\":false" });
    string_field(out, "error", l.error);
    out.extend_from_slice(b"}\n");
}

fn string_field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    quoted(out, value);
}

// The numbers are written by hand too: `core::fmt` was a third of the line's cost.

fn integer(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `{:.2}` for the durations a line carries (milliseconds, never negative).
fn hundredths(out: &mut Vec<u8>, value: f64) {
    if !(0.0..1e15).contains(&value) {
        let _ = write!(out, "{value:.2}");
        return;
    }
    let cents = (value * 100.0).round() as u64;
    integer(out, cents / 100);
    out.push(b'.');
    out.push(b'0' + (cents / 10 % 10) as u8);
    out.push(b'0' + (cents % 10) as u8);
}

fn address(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                integer(out, octet.into());
            }
            out.push(b':');
            integer(out, v4.port().into());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `value` as a quoted string, escaped for both JSON and `tracing`'s text format,
/// cut to [`super::clean::MAX_ECHO_CHARS`]; control, format and separator characters
/// (a bidirectional override, U+2028) are escaped, never written as themselves.
fn quoted(out: &mut Vec<u8>, value: &str) {
    let value = &*super::clean::clip(value);
    out.push(b'"');
    // The usual case (ids, names): nothing to escape.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if super::clean::is_unsafe(c) => {
                // JSON's escape; beyond the BMP, as a surrogate pair.
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> RequestLine<'static> {
        RequestLine {
            request_id: "req_1",
            client: ([127, 0, 0, 1], 4242).into(),
            method: "POST",
            path: "/v1/chat/completions",
            user: "ali\"ce",
            model: "m",
            backend: "p/up",
            status: 200,
            latency_ms: 1.234,
            first_byte_ms: None,
            attempts: 1,
            stream: false,
            error: "-",
        }
    }

    #[test]
    fn dates_and_times_are_rfc3339() {
        assert_eq!(date_time(0), "1970-01-01T00:00:00");
        assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(date_time(1_795_449_601), "2026-11-23T16:00:01");
    }

    #[test]
    fn the_json_line_is_json_with_every_field() {
        let mut out = b"2026-11-23T10:00:00.000001Z".to_vec();
        json(&line(), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["timestamp"], "2026-11-23T10:00:00.000001Z");
        assert_eq!(v["user"], "ali\"ce");
        assert_eq!(v["client"], "127.0.0.1:4242");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.23);
        assert_eq!(v["first_byte_ms"], serde_json::Value::Null);
        assert_eq!(v["target"], "berry::request");
    }

    #[test]
    fn numbers_and_addresses_read_as_core_fmt_writes_them() {
        let fmt = |v: f64| {
            let mut out = Vec::new();
            hundredths(&mut out, v);
            String::from_utf8(out).expect("utf-8")
        };
        for v in [0.0, 0.004, 0.006, 1.234, 9.999, 12.5, 1234.5678, 86_400_000.0] {
            assert_eq!(fmt(v), format!("{v:.2}"), "{v}");
        }
        assert_eq!(fmt(f64::NAN), "NaN");
        let mut out = Vec::new();
        integer(&mut out, 0);
        out.push(b' ');
        integer(&mut out, u64::MAX);
        assert_eq!(out, format!("0 {}", u64::MAX).into_bytes());
        for a in ["10.0.255.1:65535", "0.0.0.0:0", "[::1]:8080", "[2001:db8::7]:1"] {
            let mut out = Vec::new();
            address(&mut out, a.parse().expect("address"));
            assert_eq!(String::from_utf8(out).expect("utf-8"), a);
        }
        let mut out = Vec::new();
        timestamp(&mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.len() == 27 && text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
    }

    #[test]
    fn quoting_escapes_what_needs_it() {
        let q = |s: &str| {
            let mut out = Vec::new();
            quoted(&mut out, s);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(q("req_1"), "\"req_1\"");
        assert_eq!(q("a\"b\\c\nd\u{7}é"), "\"a\\\"b\\\\c\\nd\\u0007é\"");
        // Issue 17, item 10: bidirectional overrides and line separators are escaped.
        assert_eq!(q("m\u{202E}x\u{2028}y\u{2029}\u{E0001}"), "\"m\\u202ex\\u2028y\\u2029\\udb40\\udc01\"");
        let escaped: serde_json::Value = serde_json::from_str(&q("\u{202E}\u{E0001}")).expect("JSON");
        assert_eq!(escaped, "\u{202E}\u{E0001}", "JSON readers get the characters back");
        // Issue 17, item 9: a huge value is cut, and says so.
        let huge = q(&"m".repeat(1_000_000));
        assert!(huge.len() < 400 && huge.ends_with("…(cut: 1000000 bytes in all)\""), "{}", &huge[huge.len() - 40..]);
    }

    #[test]
    fn the_text_line_reads_like_tracing() {
        let mut out = Vec::new();
        text(&line(), &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("  INFO berry::request: request_id=\"req_1\" client=127.0.0.1:4242 method=POST"),
            "{text}"
        );
        assert!(text.contains(" user=\"ali\\\"ce\" ") && text.ends_with(" error=\"-\"\n"), "{text}");
    }
}
