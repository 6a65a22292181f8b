//! The plots next to the tables, where a table hides the story: SVG files drawn with plotters,
//! written beside the report (bench/ in the full run, the smoke run's temporary directory otherwise).

use std::path::Path;

use plotters::{coord::Shift, prelude::*};

use crate::{config::R, stats::with_commas};

/// The writer's commits during one migration, as seconds from the migration's start.
#[derive(Clone)]
pub struct Trace {
    /// The legend's text.
    pub label: String,
    /// When each commit finished, seconds from the migration's start (negative before it).
    pub commits: Vec<f64>,
    /// The window the writer ran in, seconds from the migration's start.
    pub from: f64,
    /// The end of that window.
    pub to: f64,
    /// How long the migration took.
    pub duration: f64,
}

/// One count of case 8: medians in seconds.
pub struct HistoryPoint {
    /// Migrations in all (embedded and synthetic).
    pub migrations: usize,
    /// Our first apply (None for the no-op baseline's count, where it is not measured).
    pub first_ours: Option<f64>,
    /// psql -f once per file.
    pub first_psql: Option<f64>,
    /// The no-op `migrate`, end to end.
    pub noop: f64,
    /// The no-op's own `duration_ms`.
    pub noop_inside: f64,
}

/// Everything the cases leave for the plots; a case that did not run leaves its part empty.
#[derive(Default)]
pub struct Data {
    /// The objects in the dataset, for the titles.
    pub objects: String,
    /// Case 3: the plain transaction and ours.
    pub index_build: Vec<Trace>,
    /// Case 7: the switch's writer, and the reader's reads (start, latency), seconds.
    pub switch: Option<(Trace, Vec<(f64, f64)>)>,
    /// Case 7: (objects in the table, 002's full refresh, 003's fold), medians in seconds.
    pub upkeep: Vec<(i64, f64, f64)>,
    /// The rows each upkeep run changed.
    pub upkeep_changed: i64,
    /// Case 8.
    pub history: Vec<HistoryPoint>,
}

/// Colour-blind-safe pair: the baseline orange, ours blue.
const BASE: RGBColor = RGBColor(213, 94, 0);
const OURS: RGBColor = RGBColor(0, 114, 178);
const GREY: RGBColor = RGBColor(110, 110, 110);
const FONT: &str = "sans-serif";
/// The bin the commit rate is counted in.
const BIN_S: f64 = 0.1;

fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("drawing {what}: {err}")
}

/// The series' legend at `position`, boxed, in the plots' one style.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
    what: &str,
) -> R<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .label_font((FONT, font_size))
        .draw()
        .map_err(e(what))
}

/// Seconds on an axis, without "-0.0".
fn secs(x: &f64) -> String {
    let s = format!("{x:.1}");
    if s == "-0.0" { "0.0".into() } else { s }
}

/// Commits per second in bins of BIN_S over [from, to): (bin start, rate). Whole bins only: a last,
/// partial one would show a drop that is only the writer stopping.
fn rate(t: &Trace) -> Vec<(f64, f64)> {
    let n = ((t.to - t.from) / BIN_S).floor().max(1.0) as usize;
    let mut bins = vec![0usize; n];
    for c in &t.commits {
        let k = ((c - t.from) / BIN_S).floor();
        if k >= 0.0 && (k as usize) < n {
            bins[k as usize] += 1;
        }
    }
    bins.iter().enumerate().map(|(k, c)| (t.from + k as f64 * BIN_S, *c as f64 / BIN_S)).collect()
}

/// A chart of commit rates over time, one line per trace, the migration's end marked by a dashed line.
fn draw_rates(area: &DrawingArea<SVGBackend, Shift>, title: &str, traces: &[(&Trace, RGBColor)]) -> R<()> {
    let series: Vec<Vec<(f64, f64)>> = traces.iter().map(|(t, _)| rate(t)).collect();
    let x0 = traces.iter().map(|(t, _)| t.from).fold(f64::INFINITY, f64::min);
    let x1 = traces.iter().map(|(t, _)| t.to).fold(f64::NEG_INFINITY, f64::max);
    // Headroom above the steady rate for the legend.
    let ymax = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, 0.0..ymax)
        .map_err(e(title))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the migration started")
        .y_desc("writer commits/s (per 100 ms)")
        .x_label_formatter(&secs)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(e(title))?;
    for ((t, colour), points) in traces.iter().zip(&series) {
        let colour = *colour;
        // A step line: the rate is constant over each bin.
        let steps = points.iter().flat_map(|&(x, y)| [(x, y), (x + BIN_S, y)]);
        chart
            .draw_series(LineSeries::new(steps, colour.stroke_width(2)))
            .map_err(e(title))?
            .label(format!("{} (took {:.2} s)", t.label, t.duration))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
        chart
            .draw_series(DashedLineSeries::new([(t.duration, 0.0), (t.duration, ymax)], 6, 4, colour.stroke_width(1)))
            .map_err(e(title))?;
    }
    chart
        .draw_series(DashedLineSeries::new([(0.0, 0.0), (0.0, ymax)], 6, 4, GREY.stroke_width(1)))
        .map_err(e(title))?;
    legend(&mut chart, SeriesLabelPosition::UpperRight, 14, title)?;
    Ok(())
}

fn index_build(path: &Path, data: &Data) -> R<()> {
    let root = SVGBackend::new(path, (960, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(e("the 002 plot"))?;
    let colours = [BASE, OURS];
    let traces: Vec<(&Trace, RGBColor)> = data.index_build.iter().zip(colours).collect();
    draw_rates(&root, &format!("The scanner's writes while 002 applies ({} objects)", data.objects), &traces)?;
    root.present().map_err(e("the 002 plot"))
}

fn switch(path: &Path, data: &Data) -> R<()> {
    let Some((trace, reads)) = &data.switch else { return Ok(()) };
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(e("the 003 plot"))?;
    let (top, bottom) = root.split_vertically(400);
    draw_rates(&top, &format!("The scanner's writes while 003 switches ({} objects)", data.objects), &[(trace, OURS)])?;
    let title = "job_progress reads meanwhile (one every 5 ms)";
    let ymax = reads.iter().map(|r| r.1 * 1e3).fold(0.5, f64::max) * 1.25;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(title, (FONT, 16))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(trace.from..trace.to, 0.0..ymax)
        .map_err(e(title))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the migration started")
        .y_desc("read latency (ms)")
        .x_label_formatter(&secs)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(e(title))?;
    chart
        .draw_series(
            reads
                .iter()
                .filter(|r| r.0 >= trace.from && r.0 <= trace.to)
                .map(|r| Circle::new((r.0, r.1 * 1e3), 2, OURS.filled())),
        )
        .map_err(e(title))?;
    chart
        .draw_series(DashedLineSeries::new([(trace.duration, 0.0), (trace.duration, ymax)], 6, 4, OURS.stroke_width(1)))
        .map_err(e(title))?;
    chart
        .draw_series(DashedLineSeries::new([(0.0, 0.0), (0.0, ymax)], 6, 4, GREY.stroke_width(1)))
        .map_err(e(title))?;
    root.present().map_err(e("the 003 plot"))
}

fn upkeep(path: &Path, data: &Data) -> R<()> {
    let title =
        format!("job_progress upkeep after {} rows changed, against table size", with_commas(data.upkeep_changed));
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(e(&title))?;
    let x1 = data.upkeep.iter().map(|p| p.0 as f64 / 1e6).fold(0.0, f64::max) * 1.05;
    let ys = data.upkeep.iter().flat_map(|p| [p.1 * 1e3, p.2 * 1e3]);
    let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, (FONT, 18))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        // Room above the lines for the legend.
        .build_cartesian_2d(0.0..x1, (lo / 2.0..hi * 12.0).log_scale())
        .map_err(e(&title))?;
    chart
        .configure_mesh()
        .x_desc("objects in job_objects (millions)")
        .y_desc("one upkeep run (ms, log scale)")
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| if *y >= 1.0 { format!("{y:.0}") } else { format!("{y:.2}") })
        .light_line_style(TRANSPARENT)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .draw()
        .map_err(e(&title))?;
    for (label, colour, pick) in
        [("002: REFRESH ... CONCURRENTLY of the whole view", BASE, 1), ("003 (ours): fold of the delta log", OURS, 2)]
    {
        let points: Vec<(f64, f64)> =
            data.upkeep.iter().map(|p| (p.0 as f64 / 1e6, if pick == 1 { p.1 } else { p.2 } * 1e3)).collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)).point_size(4))
            .map_err(e(&title))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft, 14, &title)?;
    root.present().map_err(e(&title))
}

fn history(path: &Path, data: &Data) -> R<()> {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(e("the history plot"))?;
    let (left, right) = root.split_horizontally(550);
    let x1 = data.history.iter().map(|p| p.migrations).max().unwrap_or(1) as f64 * 1.05;

    let title = "First apply to an empty database";
    let first: Vec<&HistoryPoint> = data.history.iter().filter(|p| p.first_ours.is_some()).collect();
    let ymax =
        first.iter().flat_map(|p| [p.first_ours.unwrap_or(0.0), p.first_psql.unwrap_or(0.0) * 2.0]).fold(0.1, f64::max)
            * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x1, 0.0..ymax)
        .map_err(e(title))?;
    chart
        .configure_mesh()
        .x_desc("migrations")
        .y_desc("seconds")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .light_line_style(TRANSPARENT)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .draw()
        .map_err(e(title))?;
    let pts = |f: &dyn Fn(&HistoryPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        first.iter().filter_map(|p| f(p).map(|y| (p.migrations as f64, y))).collect()
    };
    chart
        .draw_series(LineSeries::new(pts(&|p| p.first_psql), BASE.stroke_width(2)).point_size(4))
        .map_err(e(title))?
        .label("psql -f, one process per file")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BASE.stroke_width(3)));
    chart
        .draw_series(LineSeries::new(pts(&|p| p.first_ours), OURS.stroke_width(2)).point_size(4))
        .map_err(e(title))?
        .label("ours: scanner-migrator migrate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], OURS.stroke_width(3)));
    chart
        .draw_series(DashedLineSeries::new(pts(&|p| p.first_psql.map(|s| s * 2.0)), 6, 4, GREY.stroke_width(1)))
        .map_err(e(title))?
        .label("goal: within 2x of psql")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], GREY.stroke_width(1)));
    legend(&mut chart, SeriesLabelPosition::UpperLeft, 13, title)?;

    let title = "No-op migrate afterwards";
    // Headroom above the data and the goal line for the legend, so it never covers a line.
    let ymax = data.history.iter().map(|p| p.noop * 1e3).fold(100.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&right)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x1, 0.0..ymax)
        .map_err(e(title))?;
    chart
        .configure_mesh()
        .x_desc("migrations applied")
        .y_desc("milliseconds")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(TRANSPARENT)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .draw()
        .map_err(e(title))?;
    let all = |f: fn(&HistoryPoint) -> f64| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = data.history.iter().map(|p| (p.migrations as f64, f(p) * 1e3)).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    chart
        .draw_series(LineSeries::new(all(|p| p.noop), OURS.stroke_width(2)).point_size(4))
        .map_err(e(title))?
        .label("ours, the CLI end to end")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], OURS.stroke_width(3)));
    let light = RGBColor(86, 180, 233);
    chart
        .draw_series(LineSeries::new(all(|p| p.noop_inside), light.stroke_width(2)).point_size(3))
        .map_err(e(title))?
        .label("ours, the report's duration_ms (lock, plan, verify)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], light.stroke_width(3)));
    chart
        .draw_series(DashedLineSeries::new([(0.0, 100.0), (x1, 100.0)], 6, 4, GREY.stroke_width(1)))
        .map_err(e(title))?
        .label("goal: under 100 ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], GREY.stroke_width(1)));
    legend(&mut chart, SeriesLabelPosition::UpperLeft, 13, title)?;
    root.present().map_err(e("the history plot"))
}

/// Draws every plot whose case ran into `dir`; returns (file name, caption) of each, for the report.
pub fn draw(dir: &Path, data: &Data) -> R<Vec<(String, String)>> {
    type Draw = fn(&Path, &Data) -> R<()>;
    let mut written = Vec::new();
    let plots: [(&str, bool, Draw, &str); 4] = [
        (
            "writes-during-002.svg",
            data.index_build.len() == 2,
            index_build,
            "Case 3: the scanner's commits per second (counted per 100 ms) while 002 applies, plain `CREATE INDEX` in \
             one transaction against ours (`CONCURRENTLY`, statement by statement); of each variant's runs, the one \
             with the median longest stall. Dashed: the migration's start and end.",
        ),
        (
            "writes-during-003.svg",
            data.switch.is_some(),
            switch,
            "Case 7: the scanner's commits per second while 003 switches job_progress from the materialized view to \
             the counts and their delta log, and the latency of every job_progress read meanwhile.",
        ),
        (
            "upkeep-vs-size.svg",
            !data.upkeep.is_empty(),
            upkeep,
            "Case 7: one upkeep run (`refresh_job_progress()`) after the same number of rows of the active job \
             changed, on tables of growing size: 002 refreshes the whole view, 003 folds the log (log scale).",
        ),
        (
            "history-cost.svg",
            !data.history.is_empty(),
            history,
            "Case 8 (issue 19): the first apply of all migrations to an empty database, ours against `psql -f` over \
             the same files, and the no-op `migrate` afterwards, against the number of migrations.",
        ),
    ];
    for (file, ran, f, caption) in plots {
        if ran {
            f(&dir.join(file), data)?;
            written.push((file.to_string(), caption.to_string()));
        }
    }
    Ok(written)
}
