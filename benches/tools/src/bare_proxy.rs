//! The baseline of the load benchmark: the least a hyper reverse proxy can do.
//! Every request goes to `--upstream` on a pooled keep-alive client, body and
//! answer streamed through untouched. No auth, no routing, no plugins, no
//! metrics: the difference between this and Berry is what Berry costs.
//!
//! `bare-proxy --upstream 127.0.0.1:PORT [--listen 127.0.0.1:0]`; prints
//! `listening on http://ADDR` once bound.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<bytes::Bytes, hyper::Error>;

#[tokio::main]
async fn main() {
    let mut upstream = None;
    let mut listen = "127.0.0.1:0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--upstream" => upstream = args.next(),
            "--listen" => listen = args.next().unwrap_or(listen),
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
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
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

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match Uri::try_from(format!("http://{upstream}{path}")) {
        Ok(uri) => uri,
        Err(_) => return Ok(error(400)),
    };
    parts.headers.remove(http::header::HOST);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(BodyExt::boxed)),
        Err(_) => Ok(error(502)),
    }
}

fn error(status: u16) -> Response<Body> {
    let mut response = Response::new(Full::new(bytes::Bytes::new()).map_err(|never| match never {}).boxed());
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response
}
