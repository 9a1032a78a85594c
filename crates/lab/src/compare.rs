//! The comparison of one scenario run with several uploaders (`lab run --uploader both`):
//! `comparison.json` (every run's summary figures side by side), `comparison.svg` (the
//! uploaders' goodput and backlog over time on shared axes, the fault shaded) and the table
//! `lab run` prints. Built only from the runs' [`Summary`]s, so it needs no lab and no root.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::Error;
use crate::peers::Uploader;
use crate::report::{Sample, Summary};

/// One figure of the comparison: how to read it from a summary and how to print it.
struct Figure {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    value: fn(&Summary) -> Option<f64>,
    /// Table text of a value (the JSON keeps the raw number).
    show: fn(f64) -> String,
}

fn whole(v: f64) -> String {
    format!("{v:.0}")
}

/// Alert latencies are compared against targets of a few seconds at real time.
fn tenths(v: f64) -> String {
    format!("{v:.1}")
}

fn megabytes(v: f64) -> String {
    format!("{:.1}", v / 1e6)
}

/// The rows of the table, in order. A figure that does not apply to a run (no fault in the
/// scenario, no alert from the uploader) is `None` and prints blank.
const FIGURES: &[Figure] = &[
    Figure {
        key: "bytes_delivered",
        label: "bytes delivered (MB)",
        unit: "bytes",
        value: |s| Some(s.bytes_delivered as f64),
        show: megabytes,
    },
    Figure {
        key: "chunks_written",
        label: "chunks written",
        unit: "chunks",
        value: |s| Some(s.chunks_written as f64),
        show: whole,
    },
    Figure {
        key: "chunks_not_recorded",
        label: "chunks not recorded (disk full)",
        unit: "chunks",
        value: |s| Some(s.chunks_not_recorded as f64),
        show: whole,
    },
    Figure {
        key: "chunks_lost",
        label: "chunks lost",
        unit: "chunks",
        value: |s| Some(s.chunks_lost as f64),
        show: whole,
    },
    Figure {
        key: "longest_outage_seconds",
        label: "longest upload outage (s)",
        unit: "seconds",
        value: |s| s.longest_outage_seconds,
        show: whole,
    },
    Figure {
        key: "longest_wire_gap_seconds",
        label: "longest stretch in the fault with nothing on the WAN (s)",
        unit: "seconds",
        value: |s| s.longest_wire_gap_seconds,
        show: whole,
    },
    Figure {
        key: "bystander_gap_seconds",
        label: "another application's TCP: longest stall in the fault (s)",
        unit: "seconds",
        value: |s| s.bystander_gap_seconds,
        show: whole,
    },
    Figure {
        key: "fault_busy_wire_mbps",
        label: "WAN while busy during the fault (Mbit/s)",
        unit: "Mbit/s",
        value: |s| s.busy_wire_mbps.1,
        show: tenths,
    },
    Figure {
        key: "backlog_drain_seconds",
        label: "backlog present at the start drained after (s)",
        unit: "seconds",
        value: |s| s.backlog_drain.map(|(t, _)| t),
        show: whole,
    },
    Figure {
        key: "backlog_drain_mbps",
        label: "goodput while draining it (Mbit/s)",
        unit: "Mbit/s",
        value: |s| s.backlog_drain.map(|(_, r)| r),
        show: tenths,
    },
    Figure {
        key: "fault_to_first_alert_seconds",
        label: "fault → first alert (s)",
        unit: "seconds",
        value: |s| s.fault_to_first_alert_seconds,
        show: tenths,
    },
    Figure {
        key: "fault_to_cause_alert_seconds",
        label: "fault → alert naming the right cause (s)",
        unit: "seconds",
        value: |s| s.fault_to_cause_alert_seconds,
        show: tenths,
    },
    Figure {
        key: "alerts_fired",
        label: "alerts fired",
        unit: "alerts",
        value: |s| Some(s.alerts_fired as f64),
        show: whole,
    },
    Figure {
        key: "wrong_cause_alerts",
        label: "alerts naming a wrong cause",
        unit: "alerts",
        value: |s| Some(s.wrong_cause_alerts as f64),
        show: whole,
    },
    Figure {
        key: "other_alerts",
        label: "alerts of other kinds (fault → window after revert)",
        unit: "alerts",
        value: |s| Some(s.other_alerts as f64),
        show: whole,
    },
    Figure {
        key: "cause_firing_messages",
        label: "firing messages about the cause",
        unit: "alerts",
        value: |s| Some(s.cause_messages.0 as f64),
        show: whole,
    },
    Figure {
        key: "cause_resolved_messages",
        label: "resolved messages about the cause",
        unit: "alerts",
        value: |s| Some(s.cause_messages.1 as f64),
        show: whole,
    },
    Figure {
        key: "revert_to_resolve_seconds",
        label: "revert → incidents resolved (s)",
        unit: "seconds",
        value: |s| s.revert_to_resolve_seconds,
        show: tenths,
    },
    Figure {
        key: "revert_to_resume_seconds",
        label: "revert → uploads resume (s)",
        unit: "seconds",
        value: |s| s.revert_to_resume_seconds,
        show: whole,
    },
    Figure {
        key: "peak_backlog_chunks",
        label: "peak backlog (chunks)",
        unit: "chunks",
        value: |s| Some(s.peak_backlog_chunks as f64),
        show: whole,
    },
    Figure {
        key: "peak_disk_used_percent",
        label: "peak disk (%)",
        unit: "percent",
        value: |s| Some(s.peak_disk_used_percent),
        show: whole,
    },
    Figure {
        key: "frag_needed_sent",
        label: "gateway frag-needed sent",
        unit: "packets",
        value: |s| Some(s.frag_needed_sent as f64),
        show: whole,
    },
];

/// One figure for every uploader.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Machine name, as in `summary.json`.
    pub figure: &'static str,
    /// Table label.
    pub label: &'static str,
    /// Unit of the values.
    pub unit: &'static str,
    /// Value per uploader (`null`: does not apply to that run).
    pub values: BTreeMap<&'static str, Option<f64>>,
    /// Table text per uploader (blank where the value is `null`).
    #[serde(skip)]
    shown: BTreeMap<&'static str, String>,
}

/// `comparison.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// Time scale of the runs.
    pub time_scale: f64,
    /// The uploaders, in the order they ran (the table's columns).
    pub uploaders: Vec<Uploader>,
    /// The figures side by side.
    pub figures: Vec<Row>,
    /// Whether every assertion of each run held.
    pub assertions_passed: BTreeMap<&'static str, bool>,
}

impl Comparison {
    /// Puts the runs' figures side by side, in the order of `summaries`.
    pub fn build(summaries: &[Summary]) -> Self {
        let figures = FIGURES
            .iter()
            .map(|f| {
                let mut values = BTreeMap::new();
                let mut shown = BTreeMap::new();
                for s in summaries {
                    let v = (f.value)(s);
                    values.insert(s.uploader.name(), v);
                    shown.insert(s.uploader.name(), v.map(f.show).unwrap_or_default());
                }
                Row {
                    figure: f.key,
                    label: f.label,
                    unit: f.unit,
                    values,
                    shown,
                }
            })
            .collect();
        Self {
            scenario: summaries
                .first()
                .map(|s| s.scenario.clone())
                .unwrap_or_default(),
            time_scale: summaries.first().map_or(1.0, |s| s.time_scale),
            uploaders: summaries.iter().map(|s| s.uploader).collect(),
            figures,
            assertions_passed: summaries
                .iter()
                .map(|s| (s.uploader.name(), s.asserts.iter().all(|a| a.passed)))
                .collect(),
        }
    }

    /// The side-by-side table: one row per figure, one column per uploader, blank where a
    /// figure does not apply, and a last row with each run's assertion verdict.
    pub fn table(&self) -> String {
        let names: Vec<&str> = self.uploaders.iter().map(|u| u.name()).collect();
        let mut rows: Vec<(&str, Vec<String>)> = self
            .figures
            .iter()
            .map(|r| {
                let cells = names
                    .iter()
                    .map(|n| r.shown.get(n).cloned().unwrap_or_default())
                    .collect();
                (r.label, cells)
            })
            .collect();
        rows.push((
            "assertions",
            names
                .iter()
                .map(|n| match self.assertions_passed.get(n) {
                    Some(true) => "ok".to_owned(),
                    Some(false) => "FAILED".to_owned(),
                    None => String::new(),
                })
                .collect(),
        ));
        // Widths in chars, not bytes: the labels contain "→".
        let label_width = rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                rows.iter()
                    .map(|(_, c)| c[i].chars().count())
                    .chain([n.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut t = format!(
            "{} (time scale {}), side by side:\n",
            self.scenario, self.time_scale
        );
        let line = |label: &str, cells: &[String]| {
            let mut l = format!("  {label:<label_width$}");
            for (cell, w) in cells.iter().zip(&widths) {
                l.push_str(&format!("  {cell:>w$}"));
            }
            l.trim_end().to_owned() + "\n"
        };
        let header: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        t.push_str(&line("", &header));
        for (label, cells) in &rows {
            t.push_str(&line(label, cells));
        }
        t
    }
}

/// Writes `comparison.json` and `comparison.svg` into `dir`.
pub fn write(c: &Comparison, summaries: &[Summary], dir: &Path) -> Result<(), Error> {
    let path = dir.join("comparison.json");
    let json = serde_json::to_vec_pretty(c).map_err(|source| Error::State {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, json).map_err(|e| Error::io("write", &path, e))?;
    plot(summaries, &dir.join("comparison.svg"))
}

/// Line colour of the n-th uploader: backhaul blue as in `report.svg`, then orange.
fn colour(n: usize) -> RGBColor {
    const COLOURS: [RGBColor; 3] = [
        RGBColor(0, 0, 255),
        RGBColor(230, 120, 0),
        RGBColor(0, 150, 0),
    ];
    COLOURS[n % COLOURS.len()]
}

/// Draws goodput (top) and backlog (bottom) of every run on shared axes, the fault shaded.
pub fn plot(summaries: &[Summary], path: &Path) -> Result<(), Error> {
    let err = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let minutes = |t: f64| t / 60.0;
    let root = SVGBackend::new(path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let names: Vec<&str> = summaries.iter().map(|s| s.uploader.name()).collect();
    let title = format!(
        "{} (time scale {}): {}",
        summaries.first().map_or("", |s| s.scenario.as_str()),
        summaries.first().map_or(1.0, |s| s.time_scale),
        names.join(" vs "),
    );
    let root = root
        .titled(&title, ("sans-serif", 18))
        .map_err(|e| err(&e))?;
    let t_max = summaries
        .iter()
        .filter_map(|s| s.samples.last())
        .map(|x| minutes(x.t_seconds))
        .fold(1.0_f64, f64::max);
    // The runs applied the same timeline a few milliseconds apart; shade from the earliest
    // fault to the latest revert so the window covers every run.
    let fault = summaries
        .iter()
        .filter_map(|s| s.fault_seconds.0)
        .reduce(f64::min);
    let revert = summaries
        .iter()
        .filter_map(|s| s.fault_seconds.1)
        .reduce(f64::max);
    type Value = fn(&Sample) -> f64;
    let panels: [(&str, &str, Value); 2] = [
        ("goodput Mbit/s", "goodput", |x| x.goodput_mbps),
        ("backlog (chunks)", "backlog", |x| x.backlog_chunks as f64),
    ];
    for (area, (y_desc, what, value)) in root.split_evenly((2, 1)).iter().zip(panels) {
        let y_max = summaries
            .iter()
            .flat_map(|s| s.samples.iter().map(value))
            .fold(1.0_f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc(y_desc)
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(f) = fault {
            let end = revert.map_or(t_max, minutes);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(minutes(f), 0.0), (end, y_max)],
                    RGBColor(255, 200, 200).mix(0.4).filled(),
                )))
                .map_err(|e| err(&e))?
                .label("fault")
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 16, y + 5)],
                        RGBColor(255, 200, 200).filled(),
                    )
                });
        }
        for (n, s) in summaries.iter().enumerate() {
            let c = colour(n);
            chart
                .draw_series(LineSeries::new(
                    s.samples.iter().map(|x| (minutes(x.t_seconds), value(x))),
                    c.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(format!("{} {what}", s.uploader.name()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            // Alerts in the uploader's colour, so "who alerted when" reads off one picture.
            for a in &s.alerts {
                chart
                    .draw_series(std::iter::once(TriangleMarker::new(
                        (minutes(a.at_seconds), y_max * (0.9 - 0.05 * n as f64)),
                        6,
                        c.filled(),
                    )))
                    .map_err(|e| err(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::S3Server;
    use crate::report::AssertResult;
    use crate::scenario::{Assertion, Metric};

    fn sample(t: f64, goodput: f64, backlog: u64) -> Sample {
        Sample {
            t_seconds: t,
            delivered_chunks: 0,
            delivered_bytes: 0,
            backlog_chunks: backlog,
            backlog_bytes: 0,
            disk_used_percent: 50.0,
            goodput_mbps: goodput,
            wire_mbps: goodput,
            alerts: 0,
            bystander_bytes: None,
        }
    }

    fn summary(uploader: Uploader, lost: u64, alert: Option<f64>) -> Summary {
        Summary {
            scenario: "incident-2025-11-12".into(),
            uploader,
            s3: S3Server::Embedded,
            time_scale: 0.02,
            chunks_written: 38,
            chunks_not_recorded: 0,
            chunks_in_bucket: 38 - lost,
            chunks_left_in_spool: 0,
            chunks_lost: lost,
            lost: Vec::new(),
            bytes_delivered: 62_320_000,
            longest_outage_seconds: Some(2715.4),
            longest_wire_gap_seconds: Some(2700.0),
            busy_wire_mbps: (Some(45.0), Some(0.5)),
            bystander_gap_seconds: None,
            backlog_drain: None,
            alert_delivery_max_seconds: None,
            fault_to_first_alert_seconds: alert,
            fault_to_cause_alert_seconds: alert.map(|a| a + 60.0),
            revert_to_resume_seconds: Some(45.0),
            revert_to_resolve_seconds: alert.map(|_| 5.0),
            alerts_fired: u64::from(alert.is_some()) * 3,
            wrong_cause_alerts: 0,
            false_flow_claims: 0,
            other_alerts: 0,
            cause_messages: (0, 0),
            peak_backlog_chunks: 23,
            peak_disk_used_percent: 91.6,
            frag_needed_sent: 0,
            fault_seconds: (Some(900.0), Some(3600.0)),
            events: Vec::new(),
            alerts: Vec::new(),
            asserts: vec![AssertResult {
                assertion: Assertion {
                    metric: Metric::ChunksLost,
                    min: None,
                    max: Some(0.0),
                },
                value: Some(lost as f64),
                passed: lost == 0,
            }],
            wire: BTreeMap::new(),
            samples: vec![sample(0.0, 43.0, 0), sample(1800.0, 0.0, 12)],
        }
    }

    fn pair() -> Vec<Summary> {
        vec![
            summary(Uploader::Backhaul, 0, Some(180.0)),
            summary(Uploader::Rclone, 2, None),
        ]
    }

    #[test]
    fn puts_figures_side_by_side_with_blanks_where_they_do_not_apply() {
        let c = Comparison::build(&pair());
        assert_eq!(c.uploaders, [Uploader::Backhaul, Uploader::Rclone]);
        let row = |key: &str| c.figures.iter().find(|r| r.figure == key).unwrap();
        let alert = row("fault_to_first_alert_seconds");
        assert_eq!(alert.values["backhaul"], Some(180.0));
        assert_eq!(alert.values["rclone"], None);
        assert_eq!(row("chunks_lost").values["rclone"], Some(2.0));
        assert_eq!(
            row("fault_to_cause_alert_seconds").values["backhaul"],
            Some(240.0)
        );
        assert!(c.assertions_passed["backhaul"]);
        assert!(!c.assertions_passed["rclone"]);

        let json: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(json["uploaders"], serde_json::json!(["backhaul", "rclone"]));
        let figures = json["figures"].as_array().unwrap();
        let bytes = &figures[0];
        assert_eq!(bytes["figure"], "bytes_delivered");
        assert_eq!(bytes["values"]["backhaul"], 62_320_000.0);
        let alert = figures
            .iter()
            .find(|f| f["figure"] == "fault_to_first_alert_seconds")
            .unwrap();
        assert!(alert["values"]["rclone"].is_null());
    }

    #[test]
    fn the_table_has_a_column_per_uploader_and_blank_cells() {
        let table = Comparison::build(&pair()).table();
        let lines: Vec<&str> = table.lines().collect();
        let header = lines[1];
        assert!(
            header.trim_start().starts_with("backhaul") && header.ends_with("rclone"),
            "{table}"
        );
        let line = |label: &str| *lines.iter().find(|l| l.contains(label)).unwrap();
        // The cells after the label, split on the column gaps.
        let cells = |label: &str| -> Vec<String> {
            line(label)[2 + label.len()..]
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(cells("bytes delivered (MB)"), ["62.3", "62.3"], "{table}");
        assert_eq!(cells("chunks lost"), ["0", "2"], "{table}");
        assert_eq!(
            cells("longest upload outage (s)"),
            ["2715", "2715"],
            "{table}"
        );
        assert_eq!(cells("assertions"), ["ok", "FAILED"], "{table}");
        // rclone raises no alert: its cell is blank, and backhaul's value sits in its own
        // column (right-aligned under "backhaul"), not under rclone's.
        assert_eq!(cells("fault → first alert (s)"), ["180.0"], "{table}");
        let end_of_backhaul = header.find("backhaul").unwrap() + "backhaul".len();
        assert_eq!(
            line("fault → first alert (s)").chars().count(),
            end_of_backhaul,
            "{table}"
        );
        // Columns line up although labels contain the multi-byte "→".
        let width = |l: &str| l.chars().count();
        assert_eq!(
            width(header),
            width(line("revert → uploads resume (s)")),
            "{table}"
        );
    }

    #[test]
    fn draws_both_uploaders_into_one_svg() {
        let dir = std::env::temp_dir().join(format!("bhl-compare-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let summaries = pair();
        write(&Comparison::build(&summaries), &summaries, &dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("comparison.svg")).unwrap();
        assert!(svg.contains("backhaul goodput") && svg.contains("rclone backlog"));
        assert!(dir.join("comparison.json").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
