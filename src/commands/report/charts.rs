//! The night report's charts, drawn by `plotters` into SVG strings that the
//! page inlines. Text names the generic `sans-serif` family only: the
//! browser picks a local font, nothing is fetched.

use chrono::{DateTime, Utc};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Lane, NightReport};
use crate::runtime::history::RunStatus;
use crate::time;

/// Width of every chart, in CSS pixels (the page is at most this wide).
const WIDTH: u32 = 1080;
/// Height of one lane or bar row.
const ROW: u32 = 30;
const FONT: &str = "sans-serif";

/// Colour of a run status, shared by the charts and the page's badges.
pub fn status_rgb(status: RunStatus) -> (u8, u8, u8) {
    match status {
        RunStatus::Completed => (46, 125, 50),
        RunStatus::CompletedWithErrors => (230, 145, 0),
        RunStatus::Failed => (198, 40, 40),
        RunStatus::Stopped => (106, 27, 154),
        RunStatus::Skipped => (120, 120, 120),
        RunStatus::Started => (21, 101, 192), // running, or stale
    }
}

pub fn status_hex(status: RunStatus) -> String {
    let (r, g, b) = status_rgb(status);
    format!("#{r:02x}{g:02x}{b:02x}")
}

const ACCEPTED: RGBColor = RGBColor(46, 125, 50);
const FAILED: RGBColor = RGBColor(198, 40, 40);
const DEFERRED: RGBColor = RGBColor(150, 150, 150);
const PENDING: RGBColor = RGBColor(230, 145, 0);
const REGENERATED: RGBColor = RGBColor(21, 101, 192);
const BAR: RGBColor = RGBColor(21, 101, 192);
const NIGHT: RGBColor = RGBColor(232, 240, 254);

type Draw = Result<(), Box<dyn std::error::Error>>;

/// A y axis of `n` rows. plotters counts both ends of an integer range as
/// keys, so `0..n - 1` has `n` segments; a single row keeps `0..1` (a range
/// of one key cannot be mapped) and an empty row above it.
fn rows_axis(
    n: i32,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordi32> {
    if n >= 2 {
        (0..n - 1).into_segmented()
    } else {
        (0..1).into_segmented()
    }
}

fn svg(
    height: u32,
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Draw,
) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        if let Err(e) = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|_| draw(root.clone()))
        {
            // A chart that cannot be drawn must not cost the operator the
            // rest of the page: say so where it would have been.
            tracing::warn!(error = %e, "a night-report chart could not be drawn");
        }
        let _ = root.present();
    }
    out
}

/// The runs of the night on a time axis, one lane per job (first lane on
/// top), coloured by status; the night window shaded.
pub fn timeline(report: &NightReport) -> String {
    let lanes = &report.lanes;
    let n = lanes.len().max(1) as i32;
    let now = report.generated_at;
    let ends = |r: &crate::runtime::history::RunRow| r.ended_at.unwrap_or(now).max(r.started_at);
    let (mut t0, mut t1) = match (
        report.runs.iter().map(|r| r.started_at).min(),
        report.runs.iter().map(ends).max(),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => report.window,
    };
    if t1 - t0 < chrono::Duration::seconds(30) {
        let mid = t0 + (t1 - t0) / 2;
        t0 = mid - chrono::Duration::seconds(15);
        t1 = mid + chrono::Duration::seconds(15);
    }
    let pad = (t1 - t0) / 40;
    let (t0, t1) = (t0 - pad, t1 + pad);
    let span = (t1 - t0).num_milliseconds() as f64 / 1000.0;
    let x = |t: DateTime<Utc>| (t - t0).num_milliseconds() as f64 / 1000.0;
    let min_width = span * 0.004;
    let label = time_label(t0, t1);

    svg(60 + ROW * n as u32, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(100)
            .build_cartesian_2d(0f64..span, rows_axis(n))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => lanes
                    .get((n - 1 - i) as usize)
                    .map(|l| l.job_id.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_labels(10)
            .x_label_formatter(&|s| label(t0 + chrono::Duration::milliseconds((s * 1000.0) as i64)))
            .label_style((FONT, 13))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        let (w0, w1) = (x(report.window.0).max(0.0), x(report.window.1).min(span));
        if w0 < w1 {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(w0, SegmentValue::Exact(0)), (w1, SegmentValue::Exact(n))],
                NIGHT.filled(),
            )))?;
        }
        let mut bars = Vec::new();
        for (k, lane) in lanes.iter().enumerate() {
            let y = n - 1 - k as i32;
            for &i in &lane.runs {
                let run = &report.runs[i];
                let a = x(run.started_at);
                let b = x(ends(run)).max(a + min_width);
                let (r, g, bl) = status_rgb(run.status);
                let colour = RGBColor(r, g, bl).mix(if run.dry_run { 0.45 } else { 0.9 });
                let mut rect = Rectangle::new(
                    [(a, SegmentValue::Exact(y)), (b, SegmentValue::Exact(y + 1))],
                    colour.filled(),
                );
                rect.set_margin(5, 5, 0, 0);
                bars.push(rect);
            }
        }
        chart.draw_series(bars)?;
        Ok(())
    })
}

/// Formats an instant of `[t0, t1]` in KST, as precisely as the span needs.
fn time_label(t0: DateTime<Utc>, t1: DateTime<Utc>) -> impl Fn(DateTime<Utc>) -> String {
    let span = t1 - t0;
    let days_differ = time::today_seoul_at(t0) != time::today_seoul_at(t1);
    move |t| {
        let t = t.with_timezone(&time::seoul());
        if span < chrono::Duration::minutes(10) {
            t.format("%H:%M:%S").to_string()
        } else if days_differ {
            t.format("%m-%d %H:%M").to_string()
        } else {
            t.format("%H:%M").to_string()
        }
    }
}

/// One row of a horizontal bar chart: its label, stacked parts and the
/// text written after the bar.
pub struct BarRow {
    pub label: String,
    pub parts: Vec<(f64, RGBColor)>,
    pub note: String,
}

/// Horizontal (stacked) bars, first row on top; `log` for values that span
/// orders of magnitude (a bar starts at 1).
fn hbars(rows: &[BarRow], log: bool, axis: &str) -> String {
    let n = rows.len().max(1) as i32;
    let max = rows
        .iter()
        .map(|r| r.parts.iter().map(|p| p.0).sum::<f64>())
        .fold(1.0f64, f64::max);
    let height = 70 + ROW * n as u32;
    let label_width = rows
        .iter()
        .map(|r| r.label.chars().count() as u32)
        .max()
        .unwrap_or(8)
        .clamp(8, 32)
        * 8
        + 10;
    let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let y_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => rows
            .get((n - 1 - i) as usize)
            .map(|r| r.label.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    svg(height, |root| {
        macro_rules! draw {
            ($chart:expr, $start:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .disable_y_mesh()
                    .y_labels(n as usize)
                    .y_label_formatter(&y_label)
                    .x_desc(axis)
                    .label_style((FONT, 13))
                    .axis_desc_style((FONT, 13))
                    .light_line_style(RGBColor(238, 238, 238))
                    .draw()?;
                for (k, row) in rows.iter().enumerate() {
                    let y = n - 1 - k as i32;
                    let mut at = $start;
                    let mut parts = Vec::new();
                    for &(value, colour) in &row.parts {
                        if value <= 0.0 {
                            continue;
                        }
                        let end = at + value;
                        let mut rect = Rectangle::new(
                            [
                                (at, SegmentValue::Exact(y)),
                                (end, SegmentValue::Exact(y + 1)),
                            ],
                            colour.filled(),
                        );
                        rect.set_margin(6, 6, 0, 0);
                        parts.push(rect);
                        at = end;
                    }
                    chart.draw_series(parts)?;
                    chart.draw_series(std::iter::once(
                        EmptyElement::at((at.max($start), SegmentValue::CenterOf(y)))
                            + Text::new(row.note.clone(), (6, 0), style.clone()),
                    ))?;
                }
                Ok(())
            }};
        }
        if log {
            // Headroom on the right for the note after the longest bar.
            draw!(
                ChartBuilder::on(&root)
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(label_width)
                    .build_cartesian_2d((1f64..max * 40.0).log_scale(), rows_axis(n))?,
                1f64
            )
        } else {
            draw!(
                ChartBuilder::on(&root)
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(label_width)
                    .build_cartesian_2d(0f64..max * 1.6, rows_axis(n))?,
                0f64
            )
        }
    })
}

/// Items per second per job (read, or written for a job that reads nothing it counts).
pub fn throughput(lanes: &[&Lane]) -> String {
    let rows: Vec<BarRow> = lanes
        .iter()
        .filter_map(|l| {
            let rate = l.processed_per_sec()?;
            Some(BarRow {
                label: l.job_id.clone(),
                parts: vec![(rate.max(1.0) - 1.0, BAR)],
                note: format!("{}/s", super::html::number_f(rate)),
            })
        })
        .collect();
    hbars(&rows, true, "items per second (log scale)")
}

/// KERIS accepted / failed / deferred per partner and job.
pub fn keris(report: &NightReport) -> String {
    let rows: Vec<BarRow> = report
        .keris
        .iter()
        .map(|f| BarRow {
            label: format!("{} · {}", f.partner, f.job_id),
            parts: vec![
                (f.accepted as f64, ACCEPTED),
                (f.failed as f64, FAILED),
                (f.deferred as f64, DEFERRED),
            ],
            note: format!(
                "{} accepted · {} failed{}",
                super::html::number(f.accepted as i64),
                super::html::number(f.failed as i64),
                if f.deferred > 0 {
                    format!(" · {} deferred", super::html::number(f.deferred as i64))
                } else {
                    String::new()
                }
            ),
        })
        .collect();
    hbars(&rows, false, "statements (xAPI) or calls (dashboard)")
}

/// Open error rows per code: pending and regenerated.
pub fn open_errors(rows: &[super::OpenErrors]) -> String {
    let rows: Vec<BarRow> = rows
        .iter()
        .map(|e| BarRow {
            label: e.err_code.clone(),
            parts: vec![
                (e.pending as f64, PENDING),
                (e.regenerated as f64, REGENERATED),
            ],
            note: format!(
                "{} pending · {} regenerated",
                super::html::number(e.pending),
                super::html::number(e.regenerated)
            ),
        })
        .collect();
    hbars(&rows, false, "open rows")
}

/// The legend colours of [`keris`] and [`open_errors`], for the page.
pub fn hex(colour: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", colour.0, colour.1, colour.2)
}

pub const LEGEND_ACCEPTED: RGBColor = ACCEPTED;
pub const LEGEND_FAILED: RGBColor = FAILED;
pub const LEGEND_DEFERRED: RGBColor = DEFERRED;
pub const LEGEND_PENDING: RGBColor = PENDING;
pub const LEGEND_REGENERATED: RGBColor = REGENERATED;
pub const LEGEND_NIGHT: RGBColor = NIGHT;
