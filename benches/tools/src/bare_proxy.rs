//! The baseline of the load benchmark: the least a hyper reverse proxy can do.
//! Every request goes to `--upstream` on a pooled keep-alive client, body and
//! answer streamed through untouched. No auth, no routing, no plugins, no
//! metrics: the difference between this and Berry is what Berry costs.
//!
//! `bare-proxy --upstream 127.0.0.1:PORT [--listen 127.0.0.1:0] [--client C]`;
//! prints `listening on http://ADDR` once bound.
//!
//! `--client` picks the upstream client for the client A/B (`load.sh --client`):
//! `stream` (default) streams the request body through hyper; `hyper` and `reqwest`
//! both read the whole body first, as Berry does, then send it with hyper's pooled
//! client (Berry's way) or with reqwest's; the answer streams back either way.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<bytes::Bytes, BoxError>;

#[tokio::main]
async fn main() {
    let mut upstream = None;
    let mut listen = "127.0.0.1:0".to_string();
    let mut mode = "stream".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--upstream" => upstream = args.next(),
            "--listen" => listen = args.next().unwrap_or(listen),
            "--client" => mode = args.next().unwrap_or(mode),
            _ => {
                eprintln!("usage: bare-proxy --upstream HOST:PORT [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let Some(upstream) = upstream else {
        eprintln!("usage: bare-proxy --upstream HOST:PORT [--listen ADDR]");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare-proxy: cannot bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().map_or(listen, |a| a.to_string());
    println!("listening on http://{addr}");

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = match mode.as_str() {
        "stream" => Upstream::Stream(Client::builder(TokioExecutor::new()).build(connector)),
        "hyper" => Upstream::Hyper(Client::builder(TokioExecutor::new()).build(connector)),
        "reqwest" => match reqwest::Client::builder().tcp_nodelay(true).no_proxy().build() {
            Ok(c) => Upstream::Reqwest(c),
            Err(e) => {
                eprintln!("bare-proxy: reqwest: {e}");
                std::process::exit(1);
            }
        },
        other => {
            eprintln!("bare-proxy: --client {other}: stream, hyper or reqwest");
            std::process::exit(2);
        }
    };
    let upstream: &'static str = upstream.leak();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| forward(client.clone(), upstream, request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

#[derive(Clone)]
enum Upstream {
    Stream(Client<HttpConnector, Incoming>),
    Hyper(Client<HttpConnector, Full<bytes::Bytes>>),
    Reqwest(reqwest::Client),
}

async fn forward(client: Upstream, upstream: &str, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match Uri::try_from(format!("http://{upstream}{path}")) {
        Ok(uri) => uri,
        Err(_) => return Ok(error(400)),
    };
    parts.headers.remove(http::header::HOST);
    let client = match client {
        Upstream::Stream(client) => {
            return match client.request(Request::from_parts(parts, body)).await {
                Ok(response) => Ok(response.map(|b| b.map_err(BoxError::from).boxed())),
                Err(_) => Ok(error(502)),
            };
        }
        client => client,
    };
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else { return Ok(error(400)) };
    match client {
        Upstream::Hyper(client) => match client.request(Request::from_parts(parts, Full::new(body))).await {
            Ok(response) => Ok(response.map(|b| b.map_err(BoxError::from).boxed())),
            Err(_) => Ok(error(502)),
        },
        Upstream::Reqwest(client) => {
            let request = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body);
            match request.send().await {
                Ok(response) => {
                    let (status, headers) = (response.status(), response.headers().clone());
                    let mut out = Response::new(reqwest::Body::from(response).map_err(BoxError::from).boxed());
                    *out.status_mut() = status;
                    *out.headers_mut() = headers;
                    Ok(out)
                }
                Err(_) => Ok(error(502)),
            }
        }
        Upstream::Stream(_) => Ok(error(500)),
    }
}

fn error(status: u16) -> Response<Body> {
    let mut response = Response::new(Full::new(bytes::Bytes::new()).map_err(|never| match never {}).boxed());
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response
}
