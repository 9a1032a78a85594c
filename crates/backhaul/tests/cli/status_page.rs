//! The status page (`GET /` on the metrics listener) in a real browser: headless Chromium
//! (Debian `chromium`) loads it from a running agent that has an open `mtu_drift` incident
//! (loopback declared as a 1500-byte WAN), the test reads the DOM after the page's script has
//! run, measures the layout at a phone's width, and saves screenshots.
//!
//! Why a frame for the phone: Chromium's headless mode will not make a window narrower than
//! 500 CSS px, so `--window-size=390,844` alone lays the page out at 500 px and crops the
//! screenshot to 390, which would show a layout no phone gets. The page is therefore framed
//! in an `<iframe width=390>` holding the HTML just fetched from the agent (`srcdoc`, so the
//! wrapper's script may read the frame's layout; the page loads nothing else, so it lays out
//! the same), for the measurement and for the screenshot.
//! Nothing in the page exists for the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::test_util::S3Peer;

use super::support::{BUCKET, agent, drift_site, exe, http_get};

/// A phone's viewport (CSS px), and a desktop window.
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 1000);

fn chromium_binary() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "Chromium missing: DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
                 (scripts/test does)"
            )
        })
}

/// Runs headless Chromium with its own profile under `dir` and `args`, stdout into a file
/// (a DOM dump can exceed a pipe's buffer); at most a minute.
fn chromium(dir: &Path, args: &[String]) -> Output {
    let profile = dir.join("chromium-profile");
    let stdout = dir.join("chromium.stdout");
    let mut child = Command::new(chromium_binary())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("chromium {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let out = Output {
        status,
        stdout: std::fs::read(&stdout).unwrap(),
        stderr,
    };
    assert!(
        out.status.success(),
        "chromium {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `(status line and headers, body)` of `method path` on the loopback `port`.
fn http(port: u16, method: &str, path: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_owned())
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    Some(&text[from..from + text[from..].find(end)?])
}

/// Text as Chromium serialises it in the DOM (only `&`, `<`, `>` escaped).
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A PNG of `size` that is more than a blank image.
fn assert_png(path: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        path.display()
    );
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), size, "{}", path.display());
    // A blank or nearly empty page compresses to a few KiB; text, tables and charts do not.
    assert!(
        bytes.len() > 20 * 1024,
        "{}: only {} bytes",
        path.display(),
        bytes.len()
    );
}

/// Measures the page framed at the phone's width; writes the figures as JSON into
/// `<pre id="report">` of the wrapper, which `--dump-dom` prints.
const MEASURE: &str = r#"
function measure() {
  var f = document.getElementById('page'), w = f.contentWindow, d = f.contentDocument;
  var root = d.documentElement, vw = root.clientWidth, over = [], minFont = 1e9, minChartFont = 1e9;
  d.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 0.5 && over.length < 8)
      over.push(el.tagName.toLowerCase() + '.' + el.getAttribute('class') + ' right=' + r.right);
    var text = Array.prototype.some.call(el.childNodes, function (n) {
      return n.nodeType === 3 && n.textContent.trim() !== '';
    });
    if (!text || r.width === 0) return;
    var px = parseFloat(w.getComputedStyle(el).fontSize);
    var svg = el.closest('svg');
    if (svg) {
      px = px * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
      minChartFont = Math.min(minChartFont, px);
    } else {
      minFont = Math.min(minFont, px);
    }
  });
  var charts = Array.prototype.map.call(d.querySelectorAll('svg.chart'), function (s) {
    var r = s.getBoundingClientRect();
    return { left: r.left, width: r.width, polylines: s.querySelectorAll('polyline').length };
  });
  var thead = d.querySelector('table.stack thead');
  var report = {
    innerWidth: w.innerWidth, clientWidth: vw, scrollWidth: root.scrollWidth, overflowing: over,
    minFontPx: minFont, minChartFontPx: minChartFont, charts: charts,
    tableHeadHidden: !!thead && w.getComputedStyle(thead).display === 'none',
    copyButtonShown: !!d.querySelector('button.copy:not([hidden])')
  };
  var pre = document.createElement('pre');
  pre.id = 'report';
  pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
}
var frame = document.getElementById('page');
if (frame.contentDocument && frame.contentDocument.readyState === 'complete' &&
    frame.contentDocument.querySelector('main')) measure();
else frame.addEventListener('load', measure);
"#;

fn frame_page(dir: &Path, name: &str, frame: &str, script: &str) -> String {
    let (w, h) = PHONE;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><style>html,body{{margin:0}}\
             iframe{{border:0;display:block}}</style></head><body>\
             <iframe id=\"page\" width=\"{w}\" height=\"{h}\" {frame}></iframe>\
             <script>{script}</script></body></html>"
        ),
    )
    .unwrap();
    format!("file://{}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_incident_and_charts_in_chromium_and_fits_a_phone() {
    chromium_binary(); // fail at once, with the install hint, where Chromium is missing
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = drift_site(dir.path(), &peer, "");
    let spool = dir.path().join("spool");
    let _agent = agent(&cfg);
    write_chunk(&spool, "cam1/c0.mp4", &pattern_bytes(0, 2 * 1024 * 1024));

    // Wait for the incident and the upload in the JSON the page is rendered from.
    let mut doc = serde_json::Value::Null;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(d) = serde_json::from_str::<serde_json::Value>(&http_get(port, "/status")) {
            doc = d;
            if doc["incidents"][0]["kind"] == "mtu_drift"
                && doc["upload"]["uploaded_chunks_total"] == 1
                && doc["incidents"][0]["evidence"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
            {
                break;
            }
        }
    }
    assert_eq!(doc["incidents"][0]["kind"], "mtu_drift", "{doc:#}");
    assert_eq!(doc["upload"]["uploaded_chunks_total"], 1, "{doc:#}");
    let incident = &doc["incidents"][0];

    // The HTTP side: the page's headers, HEAD without a body, the other paths unchanged.
    let (head, page) = http(port, "GET", "/");
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store\r\n"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    let (head, body) = http(port, "HEAD", "/");
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("content-length: "), "{head}");
    assert_eq!(body, "", "HEAD has no body");
    let (head, body) = http(port, "GET", "/nowhere");
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(body.contains("try / (the status page)"), "{body}");
    let (head, _) = http(port, "POST", "/");
    assert!(
        head.starts_with("http/1.1 405") && head.contains("allow: get, head"),
        "{head}"
    );
    assert!(http_get(port, "/metrics").contains("backhaul_uploaded_chunks_total 1"));

    // The DOM after load, from the running agent, at a desktop window.
    let url = format!("http://127.0.0.1:{port}/");
    let root = dir.path().to_owned();
    let (r, u) = (root.clone(), url.clone());
    let dom = tokio::task::spawn_blocking(move || {
        chromium(
            &r,
            &[
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                "--dump-dom".into(),
                u,
            ],
        )
    })
    .await
    .unwrap();
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert!(dom.contains("<title>backhaul · SITE-TEST · WARNING mtu_drift on lo</title>"));
    assert!(
        dom.contains(
            "<span class=\"kind\">mtu_drift</span> <span class=\"badge\">warning</span> \
                      <span class=\"subject\">lo</span>"
        ),
        "{dom}"
    );
    let cause = dom_text(incident["root_cause"].as_str().unwrap());
    assert!(
        dom.contains(&format!("<p class=\"cause\">{cause}</p>")),
        "{cause}\n{dom}"
    );
    assert!(
        dom.contains("<pre><code id=\"fix-0-0\">ip link set lo mtu 1500</code></pre>"),
        "{dom}"
    );
    // The page's script ran: the copy button is shown.
    assert!(
        dom.contains("<button type=\"button\" class=\"copy\" data-copy=\"fix-0-0\">Copy</button>"),
        "{dom}"
    );
    let timeline = between(&dom, "<ol class=\"timeline\">", "</ol>").expect("an evidence list");
    let evidence = incident["evidence"].as_array().unwrap();
    // The timeline may have grown since /status was read; its oldest line stays first.
    assert!(
        timeline.matches("<li>").count() >= evidence.len(),
        "{timeline}"
    );
    let first = evidence[0].as_str().unwrap();
    let (time, what) = first.split_once(' ').unwrap();
    assert!(
        timeline.contains(&format!("<li><time>{time}</time> {}</li>", dom_text(what))),
        "{timeline}"
    );
    assert!(
        dom.contains("<tr class=\"drift\"><td data-label=\"interface\">lo</td>"),
        "{dom}"
    );
    assert!(dom.contains("<td data-label=\"MTU\"><span>65536 "), "{dom}");
    assert!(
        dom.contains("<td data-label=\"declared\">1500</td>"),
        "{dom}"
    );
    assert!(dom.contains("<h2>Probes and path MTU</h2>"), "{dom}");
    assert!(dom.contains("<h2>VPN</h2>\n<p>not monitored: "), "{dom}");
    assert!(dom.contains("1 chunks</dd>"), "{dom}");
    for id in ["goodput", "backlog-chunks", "backlog-bytes", "disk"] {
        let svg = between(&dom, &format!("<svg class=\"chart chart-{id}\""), "</svg>")
            .unwrap_or_else(|| panic!("chart {id} missing:\n{dom}"));
        let points = between(svg, "<polyline class=\"line\" points=\"", "\"")
            .unwrap_or_else(|| panic!("chart {id} has no line: {svg}"));
        // The sample taken at start and the current figures at least.
        assert!(points.split(' ').count() >= 2, "{id}: {points}");
        assert!(svg.contains(">now</text>"), "{svg}");
    }

    // The layout at a phone's width, measured in the browser.
    let wrapper = frame_page(
        &root,
        "phone-layout.html",
        &format!(
            "srcdoc=\"{}\"",
            page.replace('&', "&amp;").replace('"', "&quot;")
        ),
        MEASURE,
    );
    let r = root.clone();
    let out = tokio::task::spawn_blocking(move || {
        chromium(
            &r,
            &[
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                "--dump-dom".into(),
                wrapper,
            ],
        )
    })
    .await
    .unwrap();
    let dump = String::from_utf8(out.stdout).unwrap();
    let json = between(&dump, "<pre id=\"report\">", "</pre>")
        .unwrap_or_else(|| panic!("no layout report:\n{dump}"));
    let report: serde_json::Value = serde_json::from_str(
        &json
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
    .unwrap();
    eprintln!("layout at {} px: {report}", PHONE.0);
    assert_eq!(report["innerWidth"], PHONE.0, "{report:#}");
    let client = report["clientWidth"].as_f64().unwrap();
    assert!(
        report["scrollWidth"].as_f64().unwrap() <= client,
        "the page scrolls sideways at {} px: {report:#}",
        PHONE.0
    );
    assert_eq!(report["overflowing"], serde_json::json!([]), "{report:#}");
    assert!(report["minFontPx"].as_f64().unwrap() >= 12.0, "{report:#}");
    assert!(
        report["minChartFontPx"].as_f64().unwrap() >= 11.0,
        "{report:#}"
    );
    assert_eq!(report["tableHeadHidden"], true, "tables stack: {report:#}");
    assert_eq!(report["copyButtonShown"], true, "{report:#}");
    let charts = report["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 4, "{report:#}");
    for c in charts {
        // One column, each chart nearly the width of the screen.
        assert_eq!(c["left"], charts[0]["left"], "{report:#}");
        let width = c["width"].as_f64().unwrap();
        assert!(width > 0.8 * client && width <= client, "{report:#}");
        assert_eq!(c["polylines"], 1, "{report:#}");
    }

    // Screenshots: the phone (the agent's page in a 390 px frame) and a desktop window.
    let phone = root.join("status-page-phone.png");
    let desktop = root.join("status-page-desktop.png");
    // The frame holds the page as fetched, like the layout check: a frame loading the URL
    // itself was sometimes shot before it had loaded on a busy machine (a blank 2.7 KB PNG).
    let wrapper = frame_page(
        &root,
        "phone.html",
        &format!(
            "srcdoc=\"{}\"",
            page.replace('&', "&amp;").replace('"', "&quot;")
        ),
        "",
    );
    let (r, p, d) = (root.clone(), phone.clone(), desktop.clone());
    tokio::task::spawn_blocking(move || {
        chromium(
            &r,
            &[
                format!("--window-size={},{}", PHONE.0, PHONE.1),
                "--virtual-time-budget=3000".into(),
                format!("--screenshot={}", p.display()),
                wrapper,
            ],
        );
        chromium(
            &r,
            &[
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                "--virtual-time-budget=3000".into(),
                format!("--screenshot={}", d.display()),
                url,
            ],
        );
    })
    .await
    .unwrap();
    assert_png(&phone, PHONE);
    assert_png(&desktop, DESKTOP);
    // For people: target/status-page-{phone,desktop}.png (the binary is target/<profile>/).
    let target = exe().parent().unwrap().parent().unwrap().to_owned();
    std::fs::copy(&phone, target.join("status-page-phone.png")).unwrap();
    std::fs::copy(&desktop, target.join("status-page-desktop.png")).unwrap();
}
