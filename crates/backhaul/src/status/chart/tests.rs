use super::*;

fn mbps(v: f64) -> String {
    format!("{v} Mbit/s")
}

const GOODPUT: Spec<'static> = Spec {
    id: "goodput",
    title: "goodput",
    format: mbps,
    min_top: 1.0,
    fixed_top: None,
};

fn p(age_seconds: f64, value: f64) -> Point {
    Point { age_seconds, value }
}

fn polyline(svg: &str) -> Vec<(f64, f64)> {
    let start = svg.find("points=\"").expect("a polyline") + 8;
    let end = start + svg[start..].find('"').unwrap();
    svg[start..end]
        .split(' ')
        .map(|xy| {
            let (x, y) = xy.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[test]
fn points_are_placed_by_age_and_value() {
    let svg = svg(
        &GOODPUT,
        &[p(3600.0, 0.0), p(1800.0, 40.0), p(0.0, 50.0)],
        3600.0,
    );
    assert!(svg.starts_with("<svg class=\"chart chart-goodput\" viewBox=\"0 0 400 150\""));
    assert!(svg.contains("width=\"100%\""), "{svg}");
    // Left edge at an hour ago, the middle at half an hour, the right edge now; 50 is the
    // top of a 0–50 axis, 40 four fifths of the way up.
    assert_eq!(
        polyline(&svg),
        vec![(4.0, 126.0), (200.0, 41.2), (396.0, 20.0)]
    );
    assert!(svg.contains(">50 Mbit/s</text>"), "top label: {svg}");
    assert!(svg.contains(">0 Mbit/s</text>"), "zero label: {svg}");
    assert!(svg.contains(">−60 min</text>") && svg.contains(">now</text>"));
    assert!(svg.contains("<circle class=\"dot\" cx=\"396.0\" cy=\"20.0\""));
    assert!(svg.ends_with("</svg>"));
}

#[test]
fn points_out_of_order_are_drawn_oldest_first() {
    let svg = svg(&GOODPUT, &[p(0.0, 1.0), p(600.0, 1.0)], 3600.0);
    let xs: Vec<f64> = polyline(&svg).iter().map(|(x, _)| *x).collect();
    assert!(xs[0] < xs[1], "{xs:?}");
}

#[test]
fn an_empty_history_says_so_and_draws_no_line() {
    let svg = svg(&GOODPUT, &[], 3600.0);
    assert!(svg.contains(">no samples yet</text>"), "{svg}");
    assert!(!svg.contains("<polyline"), "{svg}");
    assert!(svg.contains(">1 Mbit/s</text>"), "the least top: {svg}");
}

#[test]
fn all_zero_values_lie_on_the_zero_line() {
    let svg = svg(&GOODPUT, &[p(20.0, 0.0), p(10.0, 0.0), p(0.0, 0.0)], 3600.0);
    assert!(polyline(&svg).iter().all(|(_, y)| *y == BOTTOM), "{svg}");
    assert!(svg.contains(">1 Mbit/s</text>"), "{svg}");
}

#[test]
fn non_finite_and_out_of_window_points_are_left_out() {
    let svg = svg(
        &GOODPUT,
        &[
            p(30.0, f64::NAN),
            p(f64::NAN, 5.0),
            p(20.0, f64::INFINITY),
            p(10.0, f64::NEG_INFINITY),
            p(-1.0, 5.0),
            p(4000.0, 5.0),
            p(0.0, 2.0),
        ],
        3600.0,
    );
    assert_eq!(polyline(&svg), vec![(396.0, 20.0)], "{svg}");
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    // Only non-finite values: nothing to draw, and still a valid axis.
    let svg = super::svg(&GOODPUT, &[p(0.0, f64::NAN)], f64::NAN);
    assert!(
        svg.contains("no samples yet") && svg.contains(">1 Mbit/s<"),
        "{svg}"
    );
}

#[test]
fn a_fixed_top_holds_and_clamps() {
    let disk = Spec {
        id: "disk",
        fixed_top: Some(100.0),
        ..GOODPUT
    };
    let svg = svg(&disk, &[p(10.0, 50.0), p(0.0, 140.0)], 3600.0);
    let line = polyline(&svg);
    assert_eq!(line[0].1, (TOP + BOTTOM) / 2.0);
    assert_eq!(line[1].1, TOP);
    assert!(svg.contains(">100 Mbit/s</text>"), "{svg}");
    let svg = super::svg(&disk, &[p(0.0, -3.0)], 3600.0);
    assert_eq!(polyline(&svg), vec![(396.0, BOTTOM)]);
}

#[test]
fn ceilings_are_one_two_five() {
    let cases = [
        (0.0, 1.0),
        (-4.0, 1.0),
        (f64::NAN, 1.0),
        (f64::INFINITY, 1.0),
        (0.3, 0.5),
        (1.0, 1.0),
        (1.2, 2.0),
        (3.0, 5.0),
        (7.0, 10.0),
        (10.0, 10.0),
        (1000.0, 1000.0),
        (1001.0, 2000.0),
        (4.2e9, 5e9),
    ];
    for (v, want) in cases {
        assert_eq!(nice_ceiling(v), want, "{v}");
    }
}

#[test]
fn labels_are_escaped() {
    let hostile = Spec {
        id: "x\"><script>",
        title: "<b>&",
        format: |_| "<i>".into(),
        ..GOODPUT
    };
    let svg = svg(&hostile, &[], 3600.0);
    assert!(!svg.contains("<script>") && !svg.contains("<b>") && !svg.contains("<i>"));
    assert!(
        svg.contains("&lt;b&gt;&amp;") && svg.contains("&lt;i&gt;"),
        "{svg}"
    );
}
