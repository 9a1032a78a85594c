//! `/metrics` (Prometheus text), `/status` (the agent's summary as JSON, read by
//! `backhaul status`), `/` (the same summary as an HTML page for a person at the site) and
//! `/healthz`, on a loopback address by default. GET and HEAD only (hyper leaves out the body
//! of a HEAD answer and keeps its headers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use backhaul_telemetry::{Metrics, build_info, process_samples, prometheus_text};

use crate::status::StatusBoard;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
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
                                Ok::<_, std::convert::Infallible>(respond(
                                    req.method(),
                                    req.uri().path(),
                                    &metrics,
                                    &board,
                                ))
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

/// The page's Content-Security-Policy: nothing but the page itself (its inline style and
/// script, the empty `data:` favicon), so markup that got past escaping could neither load nor
/// send anything. Framing stays allowed: the page has nothing to click that changes state.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

fn respond(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    board: &StatusBoard,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed; GET or HEAD\n".to_owned(),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/" => {
            let mut resp = reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                board.page(metrics),
            );
            let h = resp.headers_mut();
            // Every load is the state now; a cached page during an outage would mislead.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            resp
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            {
                let mut snapshot = metrics.snapshot(Instant::now());
                snapshot.samples.push(build_info(
                    env!("CARGO_PKG_VERSION"),
                    env!("BACKHAUL_REVISION"),
                ));
                snapshot.samples.extend(process_samples());
                prometheus_text(&snapshot)
            },
        ),
        "/status" => match serde_json::to_string_pretty(&board.status(metrics)) {
            Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot encode status: {e}\n"),
            ),
        },
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try / (the status page), /status (JSON) or /metrics\n".to_owned(),
        ),
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(method: Method, path: &str) -> Response<Full<Bytes>> {
        let board = StatusBoard::new("SITE-T".into());
        respond(&method, path, &Metrics::default(), &board)
    }

    fn header(r: &Response<Full<Bytes>>, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    #[test]
    fn the_root_is_the_status_page_never_cached() {
        let r = get(Method::GET, "/");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-store");
        assert!(header(&r, header::CONTENT_SECURITY_POLICY).starts_with("default-src 'none'"));
        assert_eq!(get(Method::HEAD, "/").status(), StatusCode::OK);
    }

    #[test]
    fn the_other_paths_keep_their_answers() {
        let r = get(Method::GET, "/metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, header::CONTENT_TYPE),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(header(&r, header::CACHE_CONTROL), "");
        let r = get(Method::GET, "/status");
        assert_eq!(
            (r.status(), header(&r, header::CONTENT_TYPE)),
            (StatusCode::OK, "application/json")
        );
        assert_eq!(get(Method::HEAD, "/healthz").status(), StatusCode::OK);
        let r = get(Method::GET, "/index.html");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn only_get_and_head_are_answered() {
        let r = get(Method::POST, "/");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&r, header::ALLOW), "GET, HEAD");
        assert_eq!(
            get(Method::DELETE, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
