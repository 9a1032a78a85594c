//! The status page, `GET /` on the metrics listener: the [`Status`] document and the last
//! hour's [`Sample`]s as one HTML page for a person at the site, with no external assets (the
//! site may have no route to a CDN, and the page must work during the outage it explains).
//!
//! Everything is rendered on the server; the only script shows the copy buttons and reloads
//! the page every 10 s unless text is selected (so a fix command being copied by hand is not
//! wiped away), with a `<noscript>` meta refresh for browsers without scripts. Every string
//! from the config, the incidents or the kernel goes through [`escape`].

use std::time::Instant;

use super::chart::{self, Point, Spec};
use super::history::{SAMPLE_EVERY, Sample, WINDOW};
use super::{Status, duration};

/// HTML-escapes `s` for text and for attribute values in double or single quotes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `status` with the charts of `samples` (oldest first) as seen at `now`
/// (`now_ms`: the same moment in Unix milliseconds, for the incidents' and probes' ages).
pub fn render(status: &Status, samples: &[Sample], now: Instant, now_ms: u64) -> String {
    let verdict = verdict(status);
    let mut out = String::with_capacity(32 * 1024);
    out.push_str(&format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <noscript><meta http-equiv=\"refresh\" content=\"{refresh}\"></noscript>\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>backhaul · {site} · {text}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        refresh = SAMPLE_EVERY.as_secs(),
        site = escape(&status.site),
        text = escape(&verdict.text),
    ));
    out.push_str(&format!(
        "<header>\n<h1>backhaul <span class=\"site\">{site}</span></h1>\n\
         <p class=\"verdict {class}\" id=\"verdict\">{text}</p>\n\
         <p class=\"meta\">up {up} · as of {at} UTC · refreshes every {refresh} s · \
         <a href=\"/status\">/status</a> (JSON) · <a href=\"/metrics\">/metrics</a></p>\n</header>\n<main>\n",
        site = escape(&status.site),
        class = verdict.class,
        text = escape(&verdict.text),
        up = duration(status.uptime_seconds),
        at = backhaul_diagnose::TimeBase::UNIX.hms(now_ms),
        refresh = SAMPLE_EVERY.as_secs(),
    ));
    incidents(&mut out, status, now_ms);
    figures(&mut out, status);
    charts(&mut out, samples, now);
    interfaces(&mut out, status);
    probes(&mut out, status, now_ms);
    let children: String = status
        .vpn_children
        .iter()
        .map(|c| format!("<li>{}</li>\n", escape(&c.line())))
        .collect();
    let children = if children.is_empty() {
        String::new()
    } else {
        format!("<ul class=\"child-sas\">\n{children}</ul>\n")
    };
    out.push_str(&format!(
        "<section id=\"vpn\">\n<h2>VPN</h2>\n<p>{}</p>\n{children}</section>\n",
        escape(&status.vpn)
    ));
    out.push_str(&format!(
        "</main>\n<footer><p>backhaul {} · the same figures as <code>backhaul status</code></p>\
         </footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    ));
    out
}

struct Verdict {
    text: String,
    /// A CSS class from a fixed set, never from the document.
    class: &'static str,
}

fn verdict(status: &Status) -> Verdict {
    match status.incidents.first() {
        None if status.monitoring => Verdict {
            text: "healthy".into(),
            class: "ok",
        },
        None => Verdict {
            text: "uploading (path monitoring off: no [inventory])".into(),
            class: "unknown",
        },
        Some(i) => Verdict {
            text: format!("{} {} on {}", i.severity.to_uppercase(), i.kind, i.subject),
            class: severity_class(&i.severity),
        },
    }
}

fn severity_class(severity: &str) -> &'static str {
    match severity {
        "critical" => "critical",
        "warning" => "warning",
        _ => "unknown",
    }
}

fn incidents(out: &mut String, status: &Status, now_ms: u64) {
    out.push_str(&format!(
        "<section id=\"incidents\">\n<h2>Open incidents ({})</h2>\n",
        status.incidents.len()
    ));
    if status.incidents.is_empty() {
        out.push_str(if status.monitoring {
            "<p class=\"none\">None: the path monitor sees nothing wrong.</p>\n"
        } else {
            "<p class=\"none\">None. The path rules are off (no <code>[inventory]</code> in the \
             config): a black hole, MTU drift or a down uplink is not detected; credentials, the \
             store, the disk and goodput are.</p>\n"
        });
    }
    for (n, i) in status.incidents.iter().enumerate() {
        out.push_str(&format!(
            "<article class=\"incident {class}\">\n<h3><span class=\"kind\">{kind}</span> \
             <span class=\"badge\">{severity}</span> <span class=\"subject\">{subject}</span></h3>\n\
             <p class=\"since\">since {at} UTC ({ago} ago)</p>\n\
             <p class=\"cause\">{cause}</p>\n",
            class = severity_class(&i.severity),
            kind = escape(&i.kind),
            severity = escape(&i.severity),
            subject = escape(&i.subject),
            at = backhaul_diagnose::TimeBase::UNIX.hms(i.started_at_ms),
            ago = duration(now_ms.saturating_sub(i.started_at_ms) / 1000),
            cause = escape(&i.root_cause),
        ));
        if !i.fix.is_empty() {
            out.push_str("<h4>Fix</h4>\n");
        }
        for (k, fix) in i.fix.iter().enumerate() {
            // A fix line is a command that runs as printed, or a `# ` comment: prose is shown
            // as prose, never in a box to copy.
            out.push_str(&match fix.strip_prefix("# ") {
                Some(prose) => format!("<p class=\"note\">{}</p>\n", escape(prose)),
                None => format!(
                    "<div class=\"fix\"><pre><code id=\"fix-{n}-{k}\">{}</code></pre>\
                     <button type=\"button\" class=\"copy\" data-copy=\"fix-{n}-{k}\" hidden>Copy</button></div>\n",
                    escape(fix)
                ),
            });
        }
        if !i.evidence.is_empty() {
            out.push_str("<h4>Evidence</h4>\n<ol class=\"timeline\">\n");
            for line in &i.evidence {
                out.push_str(&match split_time(line) {
                    Some((t, what)) => {
                        format!("<li><time>{}</time> {}</li>\n", escape(t), escape(what))
                    }
                    None => format!("<li>{}</li>\n", escape(line)),
                });
            }
            out.push_str("</ol>\n");
        }
        // Only a web or file URL becomes a link; anything else is text.
        let runbook = if ["https://", "http://", "file://"]
            .iter()
            .any(|s| i.runbook.starts_with(s))
        {
            format!("<a href=\"{0}\">{0}</a>", escape(&i.runbook))
        } else {
            format!("<code>{}</code>", escape(&i.runbook))
        };
        out.push_str(&format!(
            "<p class=\"runbook\">runbook: {runbook}</p>\n</article>\n"
        ));
    }
    out.push_str("</section>\n");
}

/// `("08:15:03", "eno1 MTU 1500 → 9000")` of an evidence line that starts with its time.
fn split_time(line: &str) -> Option<(&str, &str)> {
    let (t, rest) = line.split_once(' ')?;
    let b = t.as_bytes();
    let is_hms = b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 2 || i == 5 || c.is_ascii_digit());
    is_hms.then_some((t, rest))
}

fn figures(out: &mut String, status: &Status) {
    let u = &status.upload;
    let full = u
        .disk_full_projected_seconds
        .map_or("not filling".to_owned(), |s| {
            format!("full in {}", duration(s as u64))
        });
    let mut tiles = vec![
        (
            "Goodput",
            format!("{:.1} Mbit/s", finite(u.goodput_mbps_10s)),
            format!("{:.1} Mbit/s over 60 s", finite(u.goodput_mbps_60s)),
        ),
        (
            "Uploaded",
            format!("{} chunks", u.uploaded_chunks_total),
            "verified, since start".to_owned(),
        ),
        (
            "Backlog",
            format!("{} chunks", u.backlog_chunks),
            format!(
                "{}, oldest {}",
                human_bytes(u.backlog_bytes as f64),
                duration(finite(u.oldest_chunk_age_seconds) as u64)
            ),
        ),
        (
            "Disk",
            format!("{:.0} % used", finite(u.disk_used_percent)),
            full,
        ),
    ];
    if status.alerts_undelivered > 0 {
        tiles.push((
            "Alerts",
            format!("{} not delivered", status.alerts_undelivered),
            "kept in the journal, retried".to_owned(),
        ));
    }
    out.push_str("<section id=\"figures\">\n<h2>Uploads</h2>\n<dl class=\"tiles\">\n");
    for (name, value, detail) in tiles {
        out.push_str(&format!(
            "<div><dt>{name}</dt><dd class=\"value\">{}</dd><dd>{}</dd></div>\n",
            escape(&value),
            escape(&detail)
        ));
    }
    out.push_str(&format!("</dl>\n<p>store: {}</p>\n", escape(&u.store())));
    if let Some(c) = &u.credentials {
        out.push_str(&format!("<p>credentials: {}</p>\n", escape(&c.line())));
    }
    out.push_str("</section>\n");
}

/// One chart: its heading, what it draws, and how a sample gives its value.
struct Series {
    name: &'static str,
    spec: Spec<'static>,
    value: fn(&Sample) -> f64,
}

const SERIES: [Series; 4] = [
    Series {
        name: "Goodput",
        spec: Spec {
            id: "goodput",
            title: "Goodput, Mbit/s, last hour",
            format: |v| format!("{} Mbit/s", number(v)),
            min_top: 1.0,
            fixed_top: None,
        },
        value: |s| s.goodput_mbps,
    },
    Series {
        name: "Backlog (chunks)",
        spec: Spec {
            id: "backlog-chunks",
            title: "Backlog, chunks, last hour",
            format: number,
            min_top: 10.0,
            fixed_top: None,
        },
        value: |s| s.backlog_chunks,
    },
    Series {
        name: "Backlog (bytes)",
        spec: Spec {
            id: "backlog-bytes",
            title: "Backlog, bytes, last hour",
            format: human_bytes,
            min_top: 1e6,
            fixed_top: None,
        },
        value: |s| s.backlog_bytes,
    },
    Series {
        name: "Disk used",
        spec: Spec {
            id: "disk",
            title: "Spool disk used, percent, last hour",
            format: |v| format!("{} %", number(v)),
            min_top: 100.0,
            fixed_top: Some(100.0),
        },
        value: |s| s.disk_used_percent,
    },
];

fn charts(out: &mut String, samples: &[Sample], now: Instant) {
    out.push_str("<section id=\"charts\">\n<h2>Last hour</h2>\n<div class=\"charts\">\n");
    for Series { name, spec, value } in &SERIES {
        let points: Vec<Point> = samples
            .iter()
            .map(|s| Point {
                age_seconds: now.saturating_duration_since(s.at).as_secs_f64(),
                value: value(s),
            })
            .collect();
        let latest = samples
            .last()
            .map(value)
            .filter(|v| v.is_finite())
            .map_or("–".to_owned(), spec.format);
        out.push_str(&format!(
            "<figure><figcaption>{} <span class=\"now\">{} now</span></figcaption>{}</figure>\n",
            escape(name),
            escape(&latest),
            chart::svg(spec, &points, WINDOW.as_secs_f64())
        ));
    }
    out.push_str("</div>\n</section>\n");
}

fn interfaces(out: &mut String, status: &Status) {
    out.push_str("<section id=\"interfaces\">\n<h2>Interfaces</h2>\n");
    if status.interfaces.is_empty() {
        out.push_str("<p class=\"none\">No interfaces declared (<code>[inventory]</code>).</p>\n");
    } else {
        out.push_str(
            "<table class=\"stack\">\n<thead><tr><th>interface</th><th>role</th><th>MTU</th>\
             <th>declared</th><th>state</th></tr></thead>\n<tbody>\n",
        );
        for i in &status.interfaces {
            let drift = matches!(i.mtu_bytes, Some(m) if m != i.declared_mtu_bytes);
            let mtu = i.mtu_bytes.map_or("absent".to_owned(), |m| m.to_string());
            let state = match i.up {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            };
            out.push_str(&format!(
                "<tr{class}><td data-label=\"interface\">{name}</td><td data-label=\"role\">{role}</td>\
                 <td data-label=\"MTU\"><span>{mtu}{mark}</span></td><td data-label=\"declared\">{declared}</td>\
                 <td data-label=\"state\">{state}</td></tr>\n",
                class = if drift { " class=\"drift\"" } else { "" },
                name = escape(&i.name),
                role = escape(&i.role),
                mark = if drift {
                    " <span class=\"badge\">differs from declared</span>"
                } else {
                    ""
                },
                declared = i.declared_mtu_bytes,
            ));
        }
        out.push_str("</tbody>\n</table>\n");
    }
    if status.monitoring {
        out.push_str(&format!(
            "<p>link changes seen by: {}</p>\n",
            escape(&status.link_watch)
        ));
    }
    out.push_str("</section>\n");
}

fn probes(out: &mut String, status: &Status, now_ms: u64) {
    out.push_str("<section id=\"probes\">\n<h2>Probes and path MTU</h2>\n");
    if status.probes.is_empty() {
        out.push_str(if status.monitoring {
            "<p class=\"none\">No probe cycle yet.</p>\n"
        } else {
            "<p class=\"none\">Not probed: the path rules are off (no <code>[inventory]</code>).</p>\n"
        });
    } else {
        out.push_str(
            "<table class=\"stack\">\n<thead><tr><th>target</th><th>address</th><th>small</th>\
             <th>full-size DF</th><th>path MTU</th><th>when</th></tr></thead>\n<tbody>\n",
        );
        let answered = |b: Option<bool>| match b {
            Some(true) => "answered",
            Some(false) => "lost",
            None => "not sent",
        };
        for p in &status.probes {
            let note = p.note.as_deref().map_or(String::new(), |n| {
                format!("<div class=\"note\">{}</div>", escape(n))
            });
            out.push_str(&format!(
                "<tr><td data-label=\"target\">{target}</td><td data-label=\"address\">{addr}</td>\
                 <td data-label=\"small\">{small}</td>\
                 <td data-label=\"full-size DF\">{size} bytes {large}</td>\
                 <td data-label=\"path MTU\">{pmtu}</td>\
                 <td data-label=\"when\"><span>{ago} ago{note}</span></td></tr>\n",
                target = escape(&p.target),
                addr = escape(p.address.as_deref().unwrap_or("-")),
                small = answered(p.small_ok),
                size = p.large_size_bytes,
                large = answered(p.large_ok),
                pmtu = p
                    .path_mtu_bytes
                    .map_or("unknown".to_owned(), |b| format!("{b} bytes")),
                ago = duration(now_ms.saturating_sub(p.at_ms) / 1000),
            ));
        }
        out.push_str("</tbody>\n</table>\n");
    }
    let facts = status
        .clamp_line()
        .into_iter()
        .chain(status.remediation_line())
        .chain([status.frag_needed_line()]);
    for f in facts {
        out.push_str(&format!("<p>{}</p>\n", escape(&f)));
    }
    out.push_str("</section>\n");
}

/// A figure fit for display: what is not finite shows as 0 rather than as `NaN`.
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// `12`, `2.5`, `0.25`: as few digits as the value needs, for axis labels and latest values.
fn number(v: f64) -> String {
    let v = finite(v);
    if v == v.trunc() || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Decimal units, as `backhaul status` and the `STATUS=` line use them.
fn human_bytes(b: f64) -> String {
    let b = finite(b);
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    units
        .iter()
        .find(|(scale, _)| b >= *scale)
        .map_or(format!("{} B", number(b)), |(scale, unit)| {
            format!("{} {unit}", number(b / scale))
        })
}

/// Light and dark, one column on a phone; below 640 px tables become label/value lists (a
/// cell's content is one `<span>`, so that it stays one flex item beside its label) and the
/// charts' labels grow, because the chart is scaled down to the screen's width.
const CSS: &str = r#"
:root{color-scheme:light dark;--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--card:#f6f8fa;
--ok:#1a7f37;--warn:#9a6700;--warnbg:#fff8c5;--crit:#d1242f;--critbg:#ffebe9;--accent:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;
--card:#151b23;--ok:#3fb950;--warn:#d29922;--warnbg:#2e2607;--crit:#f85149;--critbg:#3c1618;--accent:#4493f8}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;overflow-wrap:anywhere}
header,main,footer{max-width:1120px;margin:0 auto;padding:0 16px}
header{padding-top:12px}
h1{font-size:1.4rem;margin:0 0 6px}h1 .site{color:var(--muted);font-weight:600}
h2{font-size:1.15rem;margin:26px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:1.05rem;margin:0 0 4px}h4{font-size:.95rem;margin:12px 0 4px}
a{color:var(--accent)}
.meta,.since,.runbook,.note,footer{color:var(--muted);font-size:.9rem}
.verdict{display:inline-block;margin:4px 0;padding:4px 12px;border-radius:6px;font-weight:700;border:1px solid var(--line);background:var(--card)}
.verdict.ok{color:var(--ok)}.verdict.warning{color:var(--warn);background:var(--warnbg)}.verdict.critical{color:var(--crit);background:var(--critbg)}
.incident{border:1px solid var(--line);border-left:6px solid var(--warn);border-radius:8px;padding:12px 14px;margin:0 0 14px;background:var(--card)}
.incident.critical{border-left-color:var(--crit)}
.incident .kind{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.badge{display:inline-block;font-size:.8rem;font-weight:600;padding:0 8px;border-radius:10px;border:1px solid currentColor;color:var(--warn);vertical-align:middle}
.critical .badge{color:var(--crit)}
.cause{margin:6px 0}
.fix{display:flex;gap:8px;align-items:flex-start;margin:4px 0}
pre{flex:1;min-width:0;margin:0;padding:8px 10px;border-radius:6px;background:var(--bg);border:1px solid var(--line);white-space:pre-wrap;overflow-wrap:anywhere}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92rem}
pre code{user-select:all}
button.copy{font:inherit;font-size:.9rem;padding:6px 12px;border-radius:6px;border:1px solid var(--line);background:var(--bg);color:var(--fg);cursor:pointer}
.timeline{margin:0;padding-left:1.4em}.timeline li{margin:2px 0}
.timeline time{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--muted)}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,200px),1fr));gap:10px;margin:0}
.tiles div{border:1px solid var(--line);border-radius:8px;padding:8px 12px;background:var(--card)}
.tiles dt{color:var(--muted);font-size:.9rem}.tiles dd{margin:0;font-size:.9rem}.tiles dd.value{font-size:1.25rem;font-weight:700}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:14px}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:8px 10px;background:var(--card)}
figcaption{font-weight:600;margin-bottom:2px}figcaption .now{color:var(--muted);font-weight:400}
svg.chart{display:block;width:100%;height:auto}
svg.chart .grid line{stroke:var(--line);stroke-dasharray:3 3}
svg.chart .axis line{stroke:var(--muted)}
svg.chart text{fill:var(--muted);font-size:12px;font-family:system-ui,sans-serif}
svg.chart text.y{paint-order:stroke;stroke:var(--card);stroke-width:3px;stroke-linejoin:round}
svg.chart .line{fill:none;stroke:var(--accent);stroke-width:2;stroke-linejoin:round}
svg.chart .dot{fill:var(--accent)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:.9rem}
tr.drift td{background:var(--warnbg)}
@media (max-width:640px){
header,main,footer{padding:0 12px}
table.stack thead{display:none}
table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
table.stack tr{border:1px solid var(--line);border-radius:8px;margin:0 0 10px;padding:4px 0}
table.stack td{display:flex;justify-content:space-between;gap:12px;border:0;padding:3px 10px;text-align:right}
table.stack td::before{content:attr(data-label);color:var(--muted);text-align:left}
.fix{flex-direction:column;align-items:stretch}
svg.chart text{font-size:15px}
}
"#;

/// Shows the copy buttons (they need a script), copies with the clipboard API where the page is
/// a secure context (loopback is) and by selecting the command otherwise; reloads every 10 s
/// unless the page is hidden or text is selected.
const SCRIPT: &str = r#"
(function(){
document.querySelectorAll('button.copy').forEach(function(b){b.hidden=false;});
document.addEventListener('click',function(e){
var b=e.target.closest&&e.target.closest('button.copy');if(!b)return;
var el=document.getElementById(b.getAttribute('data-copy'));if(!el)return;
function said(t){b.textContent=t;setTimeout(function(){b.textContent='Copy';},2000);}
function select(){var r=document.createRange();r.selectNodeContents(el);var s=getSelection();s.removeAllRanges();s.addRange(r);
var ok=false;try{ok=document.execCommand('copy');}catch(_){}said(ok?'Copied':'Press Ctrl+C');}
if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(el.textContent).then(function(){said('Copied');},select);}else{select();}
});
setInterval(function(){if(!document.hidden&&String(getSelection())==='')location.reload();},10000);
})();
"#;

#[cfg(test)]
mod tests;
