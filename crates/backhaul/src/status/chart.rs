//! Line charts as inline SVG, rendered on the server: the status page loads nothing else.
//!
//! Pure: points in, markup out. The x axis is time (the last `window_seconds`, "now" at the
//! right), so a young agent's few samples sit at the right edge instead of being stretched
//! over the whole width; the y axis runs from 0 to a 1-2-5 ceiling of the largest value.

use super::page::escape;

/// The `viewBox` the markup is drawn in; the page scales it to its column (`width="100%"`).
const WIDTH: f64 = 400.0;
const HEIGHT: f64 = 150.0;
/// The plot area inside it. The y labels sit inside it, just above their grid lines (a label
/// column to the left would take a fifth of a phone's width for "500 MB"); the margin below
/// holds the time labels.
const LEFT: f64 = 4.0;
const RIGHT: f64 = 396.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 126.0;

/// What one chart shows.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Names the chart in its `class` (`chart-<id>`).
    pub id: &'a str,
    /// What it shows, for screen readers and the tooltip.
    pub title: &'a str,
    /// Formats a value with its unit (the y-axis labels).
    pub format: fn(f64) -> String,
    /// The least top of the y axis, so that small noise does not fill the chart.
    pub min_top: f64,
    /// A fixed top (percentages: 100); values above it are drawn at the top.
    pub fixed_top: Option<f64>,
}

/// One sample: how long ago, and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds before now.
    pub age_seconds: f64,
    /// The value.
    pub value: f64,
}

/// The chart of `points` over the last `window_seconds`, as an `<svg>` element.
///
/// Points that cannot be drawn are left out rather than trusted: a non-finite age or value, or
/// an age outside the window. Negative values are drawn at 0 (every series here is a gauge of
/// something that cannot be negative).
pub fn svg(spec: &Spec<'_>, points: &[Point], window_seconds: f64) -> String {
    let window = if window_seconds.is_finite() && window_seconds > 0.0 {
        window_seconds
    } else {
        3600.0
    };
    let mut drawn: Vec<Point> = points
        .iter()
        .filter(|p| p.value.is_finite() && p.age_seconds.is_finite())
        .filter(|p| (0.0..=window).contains(&p.age_seconds))
        .map(|p| Point {
            value: p.value.max(0.0),
            ..*p
        })
        .collect();
    // Oldest (largest age) first, so the line runs left to right.
    drawn.sort_by(|a, b| b.age_seconds.total_cmp(&a.age_seconds));
    let top = match spec.fixed_top {
        Some(t) if t.is_finite() && t > 0.0 => t,
        _ => nice_ceiling(
            drawn
                .iter()
                .map(|p| p.value)
                .fold(spec.min_top.max(0.0), f64::max),
        ),
    };
    let x = |age: f64| LEFT + (1.0 - age / window) * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v.min(top) / top) * (BOTTOM - TOP);
    let title = escape(spec.title);
    let mut out = format!(
        "<svg class=\"chart chart-{id}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" \
         xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{title}\">\
         <title>{title}</title>",
        id = escape(spec.id),
    );
    // Grid: the top, the middle and the zero line; the middle one without a label, because a
    // half of a 1-2-5 top (2.5 chunks) reads worse than no label.
    let mid = (TOP + BOTTOM) / 2.0;
    out.push_str(&format!(
        "<g class=\"grid\"><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{RIGHT}\" y2=\"{TOP}\"/>\
         <line x1=\"{LEFT}\" y1=\"{mid}\" x2=\"{RIGHT}\" y2=\"{mid}\"/></g>\
         <g class=\"axis\"><line x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{RIGHT}\" y2=\"{BOTTOM}\"/></g>"
    ));
    match drawn.last() {
        None => out.push_str(&format!(
            "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no samples yet</text>",
            (LEFT + RIGHT) / 2.0,
            mid - 6.0
        )),
        Some(last) => {
            let coords: Vec<String> = drawn
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.age_seconds), y(p.value)))
                .collect();
            out.push_str(&format!(
                "<polyline class=\"line\" points=\"{}\"/>\
                 <circle class=\"dot\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>",
                coords.join(" "),
                x(last.age_seconds),
                y(last.value)
            ));
        }
    }
    // Labels last, so that they are drawn over the line (with a halo, see the page's CSS).
    let label_x = LEFT + 2.0;
    out.push_str(&format!(
        "<g class=\"labels\">\
         <text class=\"y\" x=\"{label_x}\" y=\"{}\">{}</text>\
         <text class=\"y\" x=\"{label_x}\" y=\"{}\">{}</text>\
         <text x=\"{LEFT}\" y=\"{xl}\" text-anchor=\"start\">−{} min</text>\
         <text x=\"{}\" y=\"{xl}\" text-anchor=\"middle\">−{} min</text>\
         <text x=\"{RIGHT}\" y=\"{xl}\" text-anchor=\"end\">now</text></g>",
        TOP - 4.0,
        escape(&(spec.format)(top)),
        BOTTOM - 4.0,
        escape(&(spec.format)(0.0)),
        minutes(window),
        (LEFT + RIGHT) / 2.0,
        minutes(window / 2.0),
        xl = HEIGHT - 6.0,
    ));
    out.push_str("</svg>");
    out
}

/// The smallest 1, 2 or 5 times a power of ten that is at least `v` (1 for nothing to show).
pub fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let mut magnitude = 10f64.powf(v.log10().floor());
    // log10 may round across a power of ten; one correction step either way suffices.
    if magnitude > v {
        magnitude /= 10.0;
    }
    for step in [1.0, 2.0, 5.0, 10.0] {
        // A relative epsilon: 3.0000000000000004 is 3, not a reason to go to 5.
        if step * magnitude >= v * (1.0 - 1e-12) {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn minutes(seconds: f64) -> String {
    format!("{:.0}", seconds / 60.0)
}

#[cfg(test)]
mod tests;
