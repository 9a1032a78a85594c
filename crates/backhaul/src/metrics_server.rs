//! `/metrics` (Prometheus text), `/status` (the agent's summary as JSON, read by
//! `backhaul status`) and `/healthz` on a loopback address by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use backhaul_telemetry::{Metrics, prometheus_text};

use crate::status::StatusBoard;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    let Ok((sock, _)) = accepted else { continue };
                    let metrics = metrics.clone();
                    let board = board.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let metrics = metrics.clone();
                            let board = board.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(respond(&req, &metrics, &board))
                            }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(sock), svc)
                            .await
                        {
                            tracing::debug!(error = %e, "metrics connection ended with error");
                        }
                    });
                }
            }
        }
    });
    Ok(bound)
}

fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    board: &StatusBoard,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(&metrics.snapshot(Instant::now())),
        ),
        "/status" => match serde_json::to_string_pretty(&board.status(metrics)) {
            Ok(json) => (StatusCode::OK, "application/json", json + "\n"),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot encode status: {e}\n"),
            ),
        },
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics or /status\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}
