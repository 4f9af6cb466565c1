//! Seeing Berry (issue 21): Prometheus exposition checked by the real promtool and
//! scraped by a real Prometheus with the shipped scrape config, the overhead header,
//! the GenAI metrics, the status page's per-model counters and history charts in
//! headless Chromium.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berry::mock::{FailMode, MockUpdate};
use http::{Method, Request};
use http_body_util::Full;

use crate::harness::*;

const ADMIN: &str = "observability-admin-token";
/// What Prometheus 2.x sends as `Accept` on a scrape.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(Method::GET).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send_request(request.body(Full::default()).expect("request")).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `promtool check metrics` on `text`: its exit code and what it said.
fn promtool(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs it: apt-get install prometheus)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), said)
}

#[tokio::test]
async fn metrics_negotiate_their_format_and_promtool_accepts_them() {
    let (a, b) = (mock("a").await, mock("b").await);
    let gw = TestGateway::start(&config("round_robin", &[("a", &a), ("b", &b)], &[], "")).await;
    for _ in 0..4 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    let streamed =
        serde_json::json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    assert!(stream(&gw.url("/v1/chat/completions"), TOKEN, &streamed).await.text().contains("[DONE]"));
    assert_eq!(gw.chat(TOKEN, &chat_body("nope")).await.status, 404);

    // No Accept (curl, promtool, agents): the classic text format.
    let classic = get_with(&gw.url("/metrics"), &[]).await;
    assert_eq!(header(&classic, "content-type"), "text/plain; version=0.0.4; charset=utf-8");
    let text = String::from_utf8_lossy(&classic.body).to_string();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(text.contains("# TYPE berry_requests_total counter"), "{text}");
    let (code, said) = promtool(&text);
    assert_eq!(code, 0, "promtool check metrics: {said}\n{text}");

    // Prometheus asks for OpenMetrics and gets it.
    let open = get_with(&gw.url("/metrics"), &[("accept", PROMETHEUS_ACCEPT)]).await;
    assert!(header(&open, "content-type").starts_with("application/openmetrics-text; version=1.0.0"));
    let open = String::from_utf8_lossy(&open.body).to_string();
    assert!(open.ends_with("# EOF\n") && open.contains("# TYPE berry_requests counter"), "{open}");

    // The GenAI conventions' metrics, beside Berry's own; the overhead histogram.
    let count = |name: &str, labels: &[(&str, &str)]| sum_samples(&text, name, labels);
    let chat = [("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", "openai")];
    assert_eq!(count("gen_ai_client_operation_duration_seconds_count", &chat), 5.0, "{text}");
    assert_eq!(count("gen_ai_client_operation_duration_seconds_count", &[("gen_ai_request_model", "up-model")]), 5.0);
    assert_eq!(count("gen_ai_client_operation_time_to_first_chunk_seconds_count", &chat), 1.0, "{text}");
    // The stream did not ask for usage (no include_usage): four answers reported tokens.
    assert_eq!(count("gen_ai_client_token_usage_count", &[("gen_ai_token_type", "input")]), 4.0, "{text}");
    assert!(count("gen_ai_client_token_usage_sum", &[("gen_ai_token_type", "output")]) > 0.0);
    assert_eq!(count("berry_overhead_seconds_count", &[("model", "m")]), 5.0, "{text}");
    assert_eq!(count("berry_upstream_attempts_total", &[("model", "m")]), 5.0, "{text}");
}

/// The sum of the samples named `name` whose labels include `labels` (classic text).
fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let wanted = metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[tokio::test]
async fn prometheus_scrapes_berry_with_the_shipped_config() {
    let a = mock("a").await;
    let gw = TestGateway::start(&config("round_robin", &[("a", &a)], &[], &format!("admin_token = \"{ADMIN}\""))).await;
    assert_eq!(gw.get("/metrics", None).await.status, 401, "metrics are the admin's");
    for _ in 0..3 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    // deploy/prometheus.yml as shipped, pointed at this gateway and at a token file
    // instead of compose's secret, scraping every second instead of every 15.
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).expect("token file");
    let shipped = std::fs::read_to_string(repo_root().join("deploy/prometheus.yml")).expect("deploy/prometheus.yml");
    assert!(shipped.contains("credentials_file: /run/secrets/admin-token"), "{shipped}");
    let addr = gw.url("").trim_start_matches("http://").to_string();
    let yml = shipped
        .replace("/run/secrets/admin-token", &token_file.display().to_string())
        .replace(r#"["berry-1:8080", "berry-2:8080"]"#, &format!("[{addr:?}]"))
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    assert!(yml.contains(&addr), "the shipped targets were replaced: {yml}");
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, yml).expect("config");
    let port = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (scripts/test installs it: apt-get install prometheus)");
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=sum(berry_requests_total)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "Prometheus did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let value = loop {
        let reply = send(Method::GET, &query, None, None).await;
        if reply.status == 200 {
            let v = reply.json();
            if let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                break r["value"][1].as_str().unwrap_or("").to_string();
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never had berry_requests_total: {}", reply.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The scrape itself was healthy (authorized, parsed).
    let up = send(Method::GET, &format!("http://127.0.0.1:{port}/api/v1/query?query=up"), None, None).await.json();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(value, "3", "three requests, as Prometheus stored them");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}

#[tokio::test]
async fn every_answer_says_how_long_berry_itself_took() {
    let slow =
        mock_with(berry::mock::MockSettings { name: "slow".into(), latency_ms: 300, ..Default::default() }).await;
    let gw = TestGateway::start(&config("round_robin", &[("slow", &slow)], &[], "")).await;
    let started = Instant::now();
    let reply = gw.chat(TOKEN, &chat_body("m")).await;
    let total = started.elapsed();
    assert_eq!(reply.status, 200);
    let overhead: f64 = header(&reply, "x-berry-overhead-ms").parse().expect("x-berry-overhead-ms is a number");
    assert!(total >= Duration::from_millis(300), "{total:?}");
    // The provider's 300 ms are not Berry's.
    assert!((0.0..100.0).contains(&overhead), "overhead {overhead} ms of {total:?}");
    // Errors carry it too (no upstream at all: all of it is Berry's).
    let missing = gw.chat(TOKEN, &chat_body("nope")).await;
    assert_eq!(missing.status, 404);
    assert!(header(&missing, "x-berry-overhead-ms").parse::<f64>().is_ok(), "{:?}", missing.headers);
    let streamed =
        serde_json::json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    let (status, _body) = open_stream(&gw.url("/v1/chat/completions"), TOKEN, &streamed).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_status_page_counts_per_model_and_charts_the_last_hour() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let gw = TestGateway::start(&config("round_robin", &[("a", &a), ("b", &b), ("c", &c)], &[], "")).await;
    // m: 12 requests round-robin over a, b, c (4 each); other: 5 on a. The page must
    // say 4 for a on m and 5 for a on other — not 9 for a in both.
    for _ in 0..12 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }
    for _ in 0..5 {
        assert_eq!(gw.chat(TOKEN, &chat_body("other")).await.status, 200);
    }
    // Three failures on c for m: failed over to the next backend, charted as errors.
    set(&c, MockUpdate { fail: Some(FailMode::Status(500)), ..Default::default() });
    for _ in 0..9 {
        assert_eq!(gw.chat(TOKEN, &chat_body("m")).await.status, 200);
    }

    let history = gw.get("/status/history.json", None).await.json();
    let m = &history["models"][0];
    assert_eq!(m["model"], "m");
    let sum =
        |v: &serde_json::Value| v.as_array().expect("points").iter().map(|x| x.as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(sum(&m["total"]["attempts"]), 12 + 9 + 3, "{m}");
    assert_eq!(sum(&m["total"]["failures"]), 3);
    assert_eq!(m["total"]["attempts"].as_array().map(Vec::len), Some(360), "one hour of 10 s slots");

    let profile = tempfile::tempdir().expect("profile");
    let url = gw.url("/status");
    let page = browse(profile.path(), &url, vec!["--dump-dom".into()]).await;
    let dom = String::from_utf8_lossy(&page.stdout).to_string();
    // Per model: a row per backend with this model's own counts.
    let section = |model: &str| {
        let start = dom.find(&format!("<section data-model=\"{model}\"")).unwrap_or_else(|| panic!("{model}: {dom}"));
        let end = dom[start..].find("</section>").map_or(dom.len(), |e| start + e);
        dom[start..end].to_string()
    };
    let (m_html, other_html) = (section("m"), section("other"));
    let row = |html: &str, provider: &str| -> (u64, u64) {
        let at = html.find(&format!("data-provider=\"{provider}\"")).unwrap_or_else(|| panic!("{provider}: {html}"));
        let attr = |name: &str| -> u64 {
            let from = at + html[at..].find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            html[from..from + html[from..].find('"').expect("quote")].parse().expect("number")
        };
        (attr("data-ok"), attr("data-failed"))
    };
    // m: a and b served 4 + (their share of the 9 later ones), c 4 then 3 failures.
    let (a_ok, a_failed) = row(&m_html, "a");
    let (b_ok, _) = row(&m_html, "b");
    let (c_ok, c_failed) = row(&m_html, "c");
    assert_eq!((c_ok, c_failed, a_failed), (4, 3, 0), "{m_html}");
    assert_eq!(a_ok + b_ok, 8 + 9, "{m_html}");
    assert_eq!(row(&other_html, "a"), (5, 0), "a on other counts other's requests only: {other_html}");
    assert!(dom.contains("3/3 backends healthy"), "a backend shared by two models counts once: {dom}");
    // Charts: three per model, with data; the requests chart counts what was sent.
    assert_eq!(m_html.matches("class=\"chart\"").count(), 3, "{m_html}");
    let counts = |html: &str, chart: &str| -> Vec<u64> {
        let start = html.find(&format!("data-chart=\"{chart}\"")).expect(chart);
        let end = html[start..].find("</svg>").expect("svg") + start;
        html[start..end].split("data-count=\"").skip(1).filter_map(|s| s[..s.find('"')?].parse().ok()).collect()
    };
    assert_eq!(counts(&m_html, "attempts").iter().sum::<u64>(), 24, "{m_html}");
    assert_eq!(counts(&m_html, "failures").iter().sum::<u64>(), 3, "{m_html}");
    assert_eq!(counts(&other_html, "attempts"), vec![5], "{other_html}");
    assert!(m_html.contains("data-points=\"1\""), "lines drawn: {m_html}");
    let latency_start = m_html.find("data-chart=\"latency\"").expect("latency chart");
    assert!(m_html[latency_start..].contains("d=\"M"), "latency lines drawn: {m_html}");

    let shots = repo_root().join("target").join("screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    let shot = shots.join("status-history.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse(profile.path(), &url, vec![format!("--screenshot={}", shot.display())]).await;
    let png = std::fs::read(&shot).unwrap_or_else(|_| panic!("screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real picture");
}

#[tokio::test]
async fn the_status_page_says_how_to_sign_in() {
    let a = mock("a").await;
    let gw = TestGateway::start(&config("round_robin", &[("a", &a)], &[], &format!("admin_token = \"{ADMIN}\""))).await;
    let profile = tempfile::tempdir().expect("profile");
    let page = browse(profile.path(), &gw.url("/status"), vec!["--dump-dom".into()]).await;
    let dom = String::from_utf8_lossy(&page.stdout).to_string();
    assert!(dom.contains("needs the admin token") && dom.contains("#token="), "{dom}");
    let signed_in = browse(profile.path(), &gw.url(&format!("/status#token={ADMIN}")), vec!["--dump-dom".into()]).await;
    let dom = String::from_utf8_lossy(&signed_in.stdout).to_string();
    assert!(dom.contains("data-model=\"m\""), "{dom}");
}
