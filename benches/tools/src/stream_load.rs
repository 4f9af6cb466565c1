//! Streaming load: many concurrent SSE chat streams, each measuring its time to
//! first byte and the latency of every chunk (read off the `: sent_us=` stamp the
//! mock provider puts on each event, started with `--stamp`; sender and receiver
//! share the machine's clock).
//!
//! `stream-load --url URL --streams N --seconds S [--token T] [--model M]`
//! Each of the N streams repeats requests until S seconds have passed (starts are
//! spread over the first second), then one JSON line with the results is printed.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

struct Args {
    url: String,
    token: String,
    model: String,
    streams: usize,
    seconds: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args { url: String::new(), token: String::new(), model: "bench".into(), streams: 100, seconds: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = value,
            "--token" => a.token = value,
            "--model" => a.model = value,
            "--streams" => a.streams = value.parse().map_err(|_| "--streams: not a number")?,
            "--seconds" => a.seconds = value.parse().map_err(|_| "--seconds: not a number")?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

/// What one stream task saw.
#[derive(Default)]
struct Seen {
    completed: u64,
    /// Completed, but ended by an error event instead of `[DONE]`.
    interrupted: u64,
    errors: u64,
    ttfb_us: Vec<u32>,
    chunk_us: Vec<u32>,
}

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stream-load: {e}\nusage: stream-load --url URL --streams N --seconds S [--token T] [--model M]");
            std::process::exit(2);
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(args.streams).build(connector);
    let body = Bytes::from(format!(
        r#"{{"model":"{}","stream":true,"messages":[{{"role":"user","content":"Stream me a story."}}]}}"#,
        args.model
    ));
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let (client, body, url, token) = (client.clone(), body.clone(), args.url.clone(), args.token.clone());
        let stagger = Duration::from_micros(1_000_000 * i as u64 / args.streams as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(stagger).await;
            let mut seen = Seen::default();
            while Instant::now() < end {
                match one_stream(&client, &url, &token, body.clone(), &mut seen).await {
                    Ok(()) => seen.completed += 1,
                    Err(_) => seen.errors += 1,
                }
            }
            seen
        }));
    }
    let mut all = Seen::default();
    for task in tasks {
        if let Ok(seen) = task.await {
            all.completed += seen.completed;
            all.interrupted += seen.interrupted;
            all.errors += seen.errors;
            all.ttfb_us.extend(seen.ttfb_us);
            all.chunk_us.extend(seen.chunk_us);
        }
    }
    let (t50, t99) = percentiles(&mut all.ttfb_us);
    let (c50, c99) = percentiles(&mut all.chunk_us);
    println!(
        r#"{{"streams":{},"completed":{},"interrupted":{},"errors":{},"chunks":{},"ttfb_p50_us":{t50},"ttfb_p99_us":{t99},"chunk_p50_us":{c50},"chunk_p99_us":{c99}}}"#,
        args.streams,
        all.completed,
        all.interrupted,
        all.errors,
        all.chunk_us.len()
    );
}

async fn one_stream(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    token: &str,
    body: Bytes,
    seen: &mut Seen,
) -> Result<(), String> {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut body = response.into_body();
    let mut first = true;
    let mut line = Vec::new();
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else { continue };
        let arrived = now_us();
        if first {
            seen.ttfb_us.push(started.elapsed().as_micros() as u32);
            first = false;
        }
        for &b in data.iter() {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            done |= line.as_slice() == b"data: [DONE]";
            if let Some(sent) = line.strip_prefix(b": sent_us=")
                && let Some(sent) = std::str::from_utf8(sent).ok().and_then(|s| s.parse::<u128>().ok())
            {
                seen.chunk_us.push(arrived.saturating_sub(sent) as u32);
            }
            line.clear();
        }
    }
    // A stream that ends without `[DONE]` was cut short (an SSE error event).
    if !done {
        seen.interrupted += 1;
    }
    Ok(())
}

/// p50 and p99 of `samples` (sorted in place); zeros when there are none.
fn percentiles(samples: &mut [u32]) -> (u32, u32) {
    if samples.is_empty() {
        return (0, 0);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}
