//! `cryptodl bench report`: `bench compare` documents (and `bench ops` / SEAL timings) drawn as
//! SVG charts with plotters and one self-contained HTML page, several machines side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use super::compare::{CompareDoc, Measurement, KIND, VERSION};
use crate::io::ReadSet;

/// Arguments of `cryptodl bench report`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Reads `bench compare` documents (one per machine or run; several are drawn side by side) and, \
optionally, `bench ops --json` results and SEAL timings (benches/seal/seal_ops.py) for the \
ours-vs-SEAL table. Writes into --out: index.html (self-contained: the charts inline, no \
network, no scripts from elsewhere) and the charts as SVG files: layers.svg (time per step, CPU \
vs GPU), throughput.svg (images per hour against images in flight), latency.svg (every repeat \
per packing, median and range), threads.svg (CPU thread scaling against the ideal line), \
roofline.svg (the GPU's counted bytes and multiplies against what was achieved) and \
memory.svg (peak memory). Times from software adapters (lavapipe) are labelled as such.

Examples:
  cryptodl bench report benches/results/*/compare-*.json --out report/
  cryptodl bench report a.json b.json ops-n8192-t1.json seal-n8192.json --out report/")]
pub struct ReportArgs {
    /// Result files: `bench compare` documents, `bench ops --json` output, SEAL timings.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Directory for index.html and the SVG charts (created if missing).
    #[arg(long, default_value = "report")]
    out: PathBuf,
}

/// `bench ops --json` as the report reads it.
#[derive(Deserialize)]
struct OpsDoc {
    backend: String,
    preset: String,
    threads: usize,
    ops: Vec<OpsRow>,
}

#[derive(Deserialize)]
struct OpsRow {
    op: String,
    median_us: f64,
}

/// `benches/seal/seal_ops.py` output.
#[derive(Deserialize)]
struct SealDoc {
    library: String,
    preset: String,
    threads: usize,
    median_us: std::collections::BTreeMap<String, f64>,
}

/// Every input, sorted by kind, with the file it came from.
#[derive(Default)]
struct Inputs {
    compare: Vec<(PathBuf, CompareDoc)>,
    ops: Vec<(PathBuf, OpsDoc)>,
    seal: Vec<(PathBuf, SealDoc)>,
}

fn load(paths: &[PathBuf]) -> anyhow::Result<Inputs> {
    let mut inputs = Inputs::default();
    for p in paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not JSON ({e}): give files written by `bench compare`, `bench ops --json` or benches/seal/seal_ops.py",
                p.display()
            )
        })?;
        let bad = |e: serde_json::Error, what: &str| {
            anyhow::anyhow!(
                "{} looks like {what} but does not parse as one ({e}); was it cut short or edited?",
                p.display()
            )
        };
        if v.get("kind").and_then(|k| k.as_str()) == Some(KIND) {
            let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
            if version != u64::from(VERSION) {
                anyhow::bail!(
                    "{} is a `bench compare` document of version {version}; this cryptodl reads version {VERSION}: run `bench compare` again with it",
                    p.display()
                );
            }
            let doc: CompareDoc =
                serde_json::from_value(v).map_err(|e| bad(e, "a `bench compare` document"))?;
            inputs.compare.push((p.clone(), doc));
        } else if v.get("ops").is_some() && v.get("timing").is_some() {
            let doc: OpsDoc =
                serde_json::from_value(v).map_err(|e| bad(e, "`bench ops --json` output"))?;
            inputs.ops.push((p.clone(), doc));
        } else if v.get("library").is_some() && v.get("median_us").is_some() {
            let doc: SealDoc = serde_json::from_value(v).map_err(|e| bad(e, "SEAL timings"))?;
            inputs.seal.push((p.clone(), doc));
        } else {
            anyhow::bail!(
                "{} is neither a `bench compare` document, `bench ops --json` output nor SEAL timings (benches/seal/seal_ops.py)",
                p.display()
            );
        }
    }
    if inputs.compare.is_empty() {
        anyhow::bail!("no `bench compare` document among the inputs: run `cryptodl bench compare` first (it writes one under benches/results/<machine>/)");
    }
    Ok(inputs)
}

/// The chart files, in page order: (file, title, caption).
pub(super) const CHARTS: [(&str, &str, &str); 6] = [
    ("layers.svg", "Time per step, CPU vs GPU (batch packing)", "Median time of each step of the plan for one batch, per measurement."),
    ("throughput.svg", "Throughput against images in flight (batch packing)", "Images per hour with 1, 2, ... batches in flight through one session (images in flight = batch size x batches)."),
    ("latency.svg", "Distribution of the repeats per packing", "Every timed repeat (dots: a batch, or one image), the median (bar) and the range (whisker); log scale."),
    ("threads.svg", "CPU thread scaling", "Speed-up of images per hour over the fewest threads measured (solid, each point labelled with it), beside the ideal: linear in the threads (dashed)."),
    ("roofline.svg", "GPU roofline", "Multiplies per second against multiplies per byte (log-log). The roof: the device's bandwidth and multiply rate. Diamonds: the counted cost of a batch (on the roof by construction) and its floor; dots: what was achieved (counted multiplies / measured time)."),
    ("memory.svg", "Peak memory", "Peak tensor memory of the backend (device memory on a GPU) and peak resident memory of the process, per measurement."),
];

/// Runs `cryptodl bench report`.
pub(super) fn run(args: ReportArgs) -> anyhow::Result<()> {
    let inputs = load(&args.results)?;
    let mut reads = ReadSet::new();
    for p in &args.results {
        reads.file(p, "a result file");
    }
    let out = &args.out;
    if out.exists() && !out.is_dir() {
        anyhow::bail!(
            "--out {} is a file: give a directory for index.html and the charts",
            out.display()
        );
    }
    let names = CHARTS
        .iter()
        .map(|c| c.0)
        .chain(std::iter::once("index.html"));
    for n in names {
        reads.check_output(&out.join(n), "--out")?;
    }
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;

    let runs = Runs::new(&inputs);
    let svgs = [
        layers_chart(&runs)?,
        throughput_chart(&runs)?,
        latency_chart(&runs)?,
        threads_chart(&runs)?,
        roofline_chart(&runs)?,
        memory_chart(&runs)?,
    ];
    for ((file, _, _), svg) in CHARTS.iter().zip(&svgs) {
        write(&out.join(file), svg)?;
    }
    let html = page(&inputs, &runs, &svgs);
    write(&out.join("index.html"), &html)?;
    println!(
        "report of {} measurement{} on {} machine{} written to {} (index.html and {} SVG charts)",
        runs.all.len(),
        if runs.all.len() == 1 { "" } else { "s" },
        runs.machines(),
        if runs.machines() == 1 { "" } else { "s" },
        out.display(),
        CHARTS.len()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::io::write_bytes_atomic(path, text.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e} ({})",
            path.display(),
            crate::io::write_advice(&e)
        )
    })
}

/// A measurement with the name it has in the report.
struct Run<'a> {
    /// `label`, prefixed with the machine when several documents are drawn.
    name: String,
    machine: &'a str,
    m: &'a Measurement,
}

/// `m`'s label short enough for a chart's legend: an adapter by its first words
/// ("gpu llvmpipe (software)", "gpu NVIDIA H200"); the tables keep the whole label.
fn chart_label(m: &Measurement) -> String {
    match &m.adapter {
        Some(a) => {
            let name = a.split(" (").next().unwrap_or(a).trim();
            format!("gpu {name}{}", if m.software { " (software)" } else { "" })
        }
        None => m.label.clone(),
    }
}

/// Every measurement of every document.
struct Runs<'a> {
    all: Vec<Run<'a>>,
}

impl<'a> Runs<'a> {
    fn new(inputs: &'a Inputs) -> Self {
        let several = inputs.compare.len() > 1;
        let mut all = Vec::new();
        for (i, (_, doc)) in inputs.compare.iter().enumerate() {
            // Two documents of one machine are told apart by their order.
            let same = inputs
                .compare
                .iter()
                .filter(|(_, d)| d.machine.name == doc.machine.name)
                .count()
                > 1;
            let prefix = match (several, same) {
                (false, _) => String::new(),
                (true, false) => format!("{}: ", doc.machine.name),
                (true, true) => format!("{} #{}: ", doc.machine.name, i + 1),
            };
            for m in &doc.measurements {
                all.push(Run {
                    name: format!("{prefix}{}", chart_label(m)),
                    machine: &doc.machine.name,
                    m,
                });
            }
        }
        Runs { all }
    }

    fn packing<'s>(&'s self, p: &'s str) -> impl Iterator<Item = &'s Run<'a>> + 's {
        self.all.iter().filter(move |r| r.m.packing == p)
    }

    fn machines(&self) -> usize {
        let mut m: Vec<&str> = self.all.iter().map(|r| r.machine).collect();
        m.sort_unstable();
        m.dedup();
        m.len()
    }
}

const W: u32 = 960;

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;

fn plot_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart failed: {e}")
}

/// The legend of `chart`'s series in a framed box at `pos`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(pos)
        .draw()
        .map_err(plot_err)
}

/// A row's name (cut to 42 characters) right-aligned just left of `at` (pixels of `area`).
fn row_label<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    (x, y): (i32, i32),
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let label: String = name.chars().take(42).collect();
    area.draw(&Text::new(
        label,
        (x - 8, y),
        ("sans-serif", 13)
            .into_font()
            .into_text_style(area)
            .pos(Pos::new(HPos::Right, VPos::Center)),
    ))
    .map_err(plot_err)
}

/// An SVG of `size` drawn by `draw`.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(s)
}

/// A chart with nothing to draw: its title and why.
fn empty(title: &str, why: &str) -> anyhow::Result<String> {
    svg((W, 160), |root| {
        root.draw(&Text::new(
            title.to_string(),
            (20, 30),
            ("sans-serif", 22).into_font(),
        ))
        .map_err(plot_err)?;
        root.draw(&Text::new(
            why.to_string(),
            (20, 80),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(plot_err)?;
        Ok(())
    })
}

/// A short number: 3 significant digits with k / M / G.
pub(super) fn short(x: f64) -> String {
    let a = x.abs();
    let (v, unit) = if a >= 1e9 {
        (x / 1e9, "G")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{unit}")
}

/// A time in the unit that suits it.
pub(super) fn time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

/// Horizontal grouped bars: one group per category (top to bottom), one bar per series, each
/// labelled with `fmt` of its value.
fn hbars(
    title: &str,
    x_desc: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
    fmt: &dyn Fn(f64) -> String,
) -> anyhow::Result<String> {
    let n = categories.len();
    let k = series.len().max(1);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    if n == 0 || max <= 0.0 {
        return empty(title, "no measurement to draw");
    }
    let height = (120 + n * (k * 18 + 16) + 24 * k).min(4000) as u32;
    svg((W, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(270)
            .build_cartesian_2d(0.0..max * 1.25, n as f64..0.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(x_desc)
            .draw()
            .map_err(plot_err)?;
        let h = 0.8 / k as f64;
        for (j, (name, values)) in series.iter().enumerate() {
            let color = palette(j);
            let bars = values.iter().enumerate().filter_map(|(i, v)| {
                let y0 = i as f64 + 0.1 + j as f64 * h;
                v.map(|v| Rectangle::new([(0.0, y0), (v, y0 + h * 0.9)], color.filled()))
            });
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
            let labels = values.iter().enumerate().filter_map(|(i, v)| {
                let y = i as f64 + 0.1 + (j as f64 + 0.75) * h;
                v.map(|v| Text::new(fmt(v), (v, y), ("sans-serif", 12).into_font()))
            });
            chart.draw_series(labels).map_err(plot_err)?;
        }
        for (i, c) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(0.0, i as f64 + 0.5));
            row_label(root, c, (px, py))?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

fn layers_chart(runs: &Runs<'_>) -> anyhow::Result<String> {
    let batch: Vec<&Run<'_>> = runs.packing("batch").collect();
    let mut steps: Vec<String> = Vec::new();
    for r in &batch {
        for s in &r.m.steps {
            if !steps.contains(&s.name) {
                steps.push(s.name.clone());
            }
        }
    }
    let series: Vec<(String, Vec<Option<f64>>)> = batch
        .iter()
        .map(|r| {
            let v = steps
                .iter()
                .map(|name| {
                    r.m.steps
                        .iter()
                        .find(|s| &s.name == name)
                        .map(|s| s.seconds)
                })
                .collect();
            (r.name.clone(), v)
        })
        .collect();
    let categories: Vec<String> = steps.iter().map(|s| format!("step {s}")).collect();
    hbars(
        CHARTS[0].1,
        "seconds per batch (median)",
        &categories,
        &series,
        &time,
    )
}

fn memory_chart(runs: &Runs<'_>) -> anyhow::Result<String> {
    let categories: Vec<String> = runs
        .all
        .iter()
        .map(|r| format!("{} ({})", r.name, r.m.packing))
        .collect();
    let gb = |b: u64| b as f64 / 1e9;
    let series = vec![
        (
            "backend tensors".to_string(),
            runs.all
                .iter()
                .map(|r| Some(gb(r.m.peak_memory_bytes)))
                .collect(),
        ),
        (
            "process (peak resident)".to_string(),
            runs.all
                .iter()
                .map(|r| r.m.peak_rss_bytes.map(gb))
                .collect(),
        ),
    ];
    hbars(CHARTS[5].1, "GB", &categories, &series, &|v| {
        format!("{v:.2} GB")
    })
}

/// Lines with dots and a value label at every point, on a linear (or log) y axis.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    color: RGBColor,
    labels: bool,
}

fn lines_chart(
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line],
    x_ticks: Option<&[f64]>,
) -> anyhow::Result<String> {
    let pts = || lines.iter().flat_map(|l| l.points.iter());
    let xmax = pts().fold(0.0f64, |a, p| a.max(p.0));
    let ymax = pts().fold(0.0f64, |a, p| a.max(p.1));
    if lines.is_empty() || xmax <= 0.0 || ymax <= 0.0 {
        return empty(title, "no measurement to draw");
    }
    svg((W, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..xmax * 1.15, 0.0..ymax * 1.2)
            .map_err(plot_err)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_desc)
            .y_desc(y_desc)
            .y_label_formatter(&|y| short(*y));
        if let Some(t) = x_ticks {
            mesh.x_labels(t.len().max(2) * 2);
        }
        mesh.draw().map_err(plot_err)?;
        for l in lines {
            let color = l.color;
            let style = color.stroke_width(2);
            let s = if l.dashed {
                chart
                    .draw_series(DashedLineSeries::new(l.points.clone(), 8, 6, style))
                    .map_err(plot_err)?
            } else {
                chart
                    .draw_series(LineSeries::new(l.points.clone(), style))
                    .map_err(plot_err)?
            };
            s.label(l.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
            if !l.dashed {
                chart
                    .draw_series(l.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(plot_err)?;
            }
            if l.labels {
                chart
                    .draw_series(
                        l.points.iter().map(|&(x, y)| {
                            Text::new(short(y), (x, y), ("sans-serif", 12).into_font())
                        }),
                    )
                    .map_err(plot_err)?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

fn throughput_chart(runs: &Runs<'_>) -> anyhow::Result<String> {
    let lines: Vec<Line> = runs
        .packing("batch")
        .enumerate()
        .map(|(i, r)| Line {
            name: r.name.clone(),
            points: r
                .m
                .in_flight
                .iter()
                .map(|f| {
                    (
                        (f.batches_in_flight * r.m.images_per_repeat) as f64,
                        f.images_per_hour,
                    )
                })
                .collect(),
            dashed: false,
            color: palette(i),
            labels: true,
        })
        .collect();
    lines_chart(
        CHARTS[1].1,
        ("images in flight", "images per hour"),
        &lines,
        None,
    )
}

fn threads_chart(runs: &Runs<'_>) -> anyhow::Result<String> {
    // One line per machine and packing: the CPU measurements by thread count.
    let mut groups: Vec<(String, Vec<&Run<'_>>)> = Vec::new();
    for r in runs.all.iter().filter(|r| r.m.backend == "cpu") {
        let key = format!("{} {} packing", r.machine, r.m.packing);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    // Speed-up over each line's fewest threads, so both packings share one axis.
    let mut lines: Vec<Line> = Vec::new();
    let mut ideals: Vec<(f64, f64)> = Vec::new();
    for (i, (key, mut rs)) in groups.into_iter().enumerate() {
        rs.sort_by_key(|r| r.m.threads);
        let Some(first) = rs.first() else { continue };
        let (t0, y0) = (first.m.threads as f64, first.m.images_per_hour);
        let points: Vec<(f64, f64)> = rs
            .iter()
            .map(|r| {
                (
                    r.m.threads as f64,
                    r.m.images_per_hour / y0.max(f64::MIN_POSITIVE),
                )
            })
            .collect();
        let tmax = points.last().map_or(t0, |p| p.0);
        if !ideals.contains(&(t0, tmax)) {
            ideals.push((t0, tmax));
            lines.push(Line {
                name: format!("ideal from {t0} thread{}", if t0 == 1.0 { "" } else { "s" }),
                points: vec![(t0, 1.0), (tmax, tmax / t0)],
                dashed: true,
                color: RGBColor(120, 120, 120),
                labels: false,
            });
        }
        lines.push(Line {
            name: key,
            points,
            dashed: false,
            color: palette(i),
            labels: true,
        });
    }
    let ticks: Vec<f64> = runs
        .all
        .iter()
        .filter(|r| r.m.backend == "cpu")
        .map(|r| r.m.threads as f64)
        .collect();
    lines_chart(
        CHARTS[3].1,
        (
            "worker threads",
            "speed-up (images per hour / fewest threads' figure)",
        ),
        &lines,
        Some(&ticks),
    )
}

fn latency_chart(runs: &Runs<'_>) -> anyhow::Result<String> {
    let packs: Vec<(&str, Vec<&Run<'_>>)> = ["batch", "latency"]
        .into_iter()
        .map(|p| (p, runs.packing(p).collect::<Vec<_>>()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if packs.is_empty() {
        return empty(CHARTS[2].1, "no measurement to draw");
    }
    let most = packs.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
    let height = (200 + most * 26) as u32 * packs.len() as u32;
    svg((W, height.max(300)), |root| {
        let root = root
            .titled(CHARTS[2].1, ("sans-serif", 22))
            .map_err(plot_err)?;
        let panels = root.split_evenly((packs.len(), 1));
        for ((pack, rs), area) in packs.iter().zip(&panels) {
            let all = || rs.iter().flat_map(|r| r.m.seconds_all.iter().copied());
            let lo = all().fold(f64::INFINITY, f64::min).max(1e-7);
            let hi = all().fold(0.0f64, f64::max).max(lo * 1.01);
            let n = rs.len();
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{pack} packing: seconds per {}",
                        if *pack == "batch" { "batch" } else { "image" }
                    ),
                    ("sans-serif", 16),
                )
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(270)
                .build_cartesian_2d((lo / 1.5..hi * 3.0).log_scale(), n as f64..0.0)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_desc("seconds (log scale)")
                .x_label_formatter(&|x| time(*x))
                .draw()
                .map_err(plot_err)?;
            for (i, r) in rs.iter().enumerate() {
                let color = palette(i);
                let y = i as f64 + 0.5;
                let m = r.m;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(m.seconds_min, y), (m.seconds_max, y)],
                        color.stroke_width(1),
                    )))
                    .map_err(plot_err)?;
                chart
                    .draw_series(m.seconds_all.iter().enumerate().map(|(k, &s)| {
                        let jitter = ((k % 5) as f64 - 2.0) * 0.05;
                        Circle::new((s, y + jitter), 3, color.mix(0.6).filled())
                    }))
                    .map_err(plot_err)?;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(m.seconds_median, y - 0.3), (m.seconds_median, y + 0.3)],
                        color.stroke_width(3),
                    )))
                    .map_err(plot_err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!(
                            "{}{}",
                            time(m.seconds_median),
                            if m.noisy { " (noisy)" } else { "" }
                        ),
                        (m.seconds_max * 1.1, y - 0.1),
                        ("sans-serif", 12).into_font(),
                    )))
                    .map_err(plot_err)?;
                // Backend coordinates are the whole image's; the panel draws relative to itself.
                let (px, py) = chart.backend_coord(&(lo / 1.5, y));
                let (ax, ay) = area.get_base_pixel();
                row_label(area, &r.name, (px - ax, py - ay))?;
            }
        }
        Ok(())
    })
}

fn roofline_chart(runs: &Runs<'_>) -> anyhow::Result<String> {
    let gpu: Vec<&Run<'_>> = runs
        .packing("batch")
        .filter(|r| r.m.counted.is_some())
        .collect();
    if gpu.is_empty() {
        return empty(
            CHARTS[4].1,
            "no GPU measurement in batch packing among the inputs (bench compare --backends gpu)",
        );
    }
    // (intensity, multiplies/s) of every point, for the axes.
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for r in &gpu {
        let c = r.m.counted.as_ref().expect("filtered");
        let ridge = c.mults_per_second / c.bytes_per_second;
        xs.extend([
            c.mults as f64 / c.bytes.max(1) as f64,
            c.floor_mults as f64 / c.floor_bytes.max(1) as f64,
            ridge,
        ]);
        ys.extend([
            c.mults_per_second,
            c.mults as f64 / r.m.seconds_median.max(f64::MIN_POSITIVE),
        ]);
    }
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min).max(1e-6) / 4.0;
    let x_hi = xs.iter().copied().fold(0.0f64, f64::max) * 4.0;
    let y_lo = ys.iter().copied().fold(f64::INFINITY, f64::min).max(1.0) / 4.0;
    let y_hi = ys.iter().copied().fold(0.0f64, f64::max) * 4.0;
    svg((W, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(CHARTS[4].1, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("u32 multiplies per byte of device memory moved (log)")
            .y_desc("u32 multiplies per second (log)")
            .y_label_formatter(&|y| short(*y))
            .x_label_formatter(&|x| format!("{x:.2}"))
            .draw()
            .map_err(plot_err)?;
        let mut roofs: Vec<(String, f64, f64)> = Vec::new();
        for r in &gpu {
            let c = r.m.counted.as_ref().expect("filtered");
            if !roofs.iter().any(|x| x.0 == c.roofline) {
                roofs.push((c.roofline.clone(), c.bytes_per_second, c.mults_per_second));
            }
        }
        for (i, (name, bw, mr)) in roofs.iter().enumerate() {
            let color = palette(7 - (i % 4));
            let n = 64;
            let pts: Vec<(f64, f64)> = (0..=n)
                .map(|k| {
                    let x = x_lo * (x_hi / x_lo).powf(k as f64 / n as f64);
                    (x, (x * bw).min(*mr))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(3)))
                .map_err(plot_err)?
                .label(format!(
                    "roof: {name} ({} B/s, {} mults/s)",
                    short(*bw),
                    short(*mr)
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
        }
        for (i, r) in gpu.iter().enumerate() {
            let color = palette(i);
            let c = r.m.counted.as_ref().expect("filtered");
            let counted = (
                c.mults as f64 / c.bytes.max(1) as f64,
                c.mults as f64 / c.predicted_seconds.max(f64::MIN_POSITIVE),
            );
            let floor = (
                c.floor_mults as f64 / c.floor_bytes.max(1) as f64,
                c.floor_mults as f64 / c.predicted_floor_seconds.max(f64::MIN_POSITIVE),
            );
            let achieved = (
                counted.0,
                c.mults as f64 / r.m.seconds_median.max(f64::MIN_POSITIVE),
            );
            let diamond = |p: (f64, f64), filled: bool| {
                let style = if filled {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                EmptyElement::at(p) + Polygon::new(vec![(0, -7), (7, 0), (0, 7), (-7, 0)], style)
            };
            chart
                .draw_series([diamond(counted, true), diamond(floor, false)])
                .map_err(plot_err)?
                .label(format!(
                    "{}: counted {} / floor {}",
                    r.name,
                    time(c.predicted_seconds),
                    time(c.predicted_floor_seconds)
                ))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
            chart
                .draw_series(std::iter::once(Circle::new(achieved, 6, color.filled())))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(
                        "achieved {}: {} per batch{}",
                        short(achieved.1),
                        time(r.m.seconds_median),
                        if r.m.software {
                            " (software rendering)"
                        } else {
                            ""
                        }
                    ),
                    (achieved.0 * 1.15, achieved.1),
                    ("sans-serif", 12).into_font(),
                )))
                .map_err(plot_err)?;
        }
        legend(&mut chart, SeriesLabelPosition::MiddleLeft)?;
        Ok(())
    })
}

/// `s` with the HTML special characters escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The ratio rows: per document and packing, each GPU measurement against the fastest CPU one.
fn gpu_cpu_ratios(inputs: &Inputs) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    for (path, doc) in &inputs.compare {
        for pack in ["batch", "latency"] {
            let ms = doc.measurements.iter().filter(|m| m.packing == pack);
            let cpu = ms
                .clone()
                .filter(|m| m.backend == "cpu")
                .min_by(|a, b| a.seconds_median.total_cmp(&b.seconds_median));
            let Some(cpu) = cpu else { continue };
            for g in ms.filter(|m| m.backend == "gpu") {
                rows.push([
                    doc.machine.name.clone(),
                    pack.to_string(),
                    format!(
                        "{}{}",
                        g.label,
                        if g.software {
                            " (software rendering, not GPU speed)"
                        } else {
                            ""
                        }
                    ),
                    cpu.label.clone(),
                    format!("{:.3}", g.seconds_median / cpu.seconds_median),
                    path.display().to_string(),
                ]);
            }
            let mut cpus: Vec<&Measurement> = doc
                .measurements
                .iter()
                .filter(|m| m.packing == pack && m.backend == "cpu")
                .collect();
            cpus.sort_by_key(|m| m.threads);
            if let (Some(a), Some(b)) = (cpus.first(), cpus.last()) {
                if a.threads != b.threads {
                    rows.push([
                        doc.machine.name.clone(),
                        pack.to_string(),
                        b.label.clone(),
                        a.label.clone(),
                        format!("{:.3}", b.seconds_median / a.seconds_median),
                        path.display().to_string(),
                    ]);
                }
            }
        }
    }
    rows
}

/// Ours against SEAL: `bench ops` rows on one thread beside SEAL's on the same preset.
fn seal_ratios(inputs: &Inputs) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    for (seal_path, seal) in &inputs.seal {
        for (ops_path, ops) in inputs
            .ops
            .iter()
            .filter(|(_, o)| o.preset == seal.preset && o.threads == seal.threads)
        {
            for (op, &theirs) in &seal.median_us {
                let Some(ours) = ops.ops.iter().find(|r| &r.op == op) else {
                    continue;
                };
                rows.push([
                    format!("{} ({}, {} thread)", seal.preset, ops.backend, ops.threads),
                    op.clone(),
                    format!("{:.1}", ours.median_us),
                    format!("{theirs:.1}"),
                    format!("{:.2}", ours.median_us / theirs),
                    format!(
                        "{} / {} ({})",
                        ops_path.display(),
                        seal_path.display(),
                        seal.library
                    ),
                ]);
            }
        }
    }
    rows
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn page(inputs: &Inputs, runs: &Runs<'_>, svgs: &[String]) -> String {
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cryptodl benchmark report</title>\n<style>\
         body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:1em 0;font-size:14px}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
         th{background:#f2f2f2} figure{margin:2em 0} figcaption{color:#555;font-size:14px}\
         .warn{color:#a00;font-weight:bold} svg{max-width:100%;height:auto}\
         </style></head><body>\n<h1>cryptodl benchmark report</h1>\n",
    );
    let insecure = inputs.compare.iter().any(|(_, d)| d.insecure);
    if insecure {
        h.push_str("<p class=\"warn\">INSECURE: some runs used parameters below 128-bit security (test presets).</p>\n");
    }
    if runs.all.iter().any(|r| r.m.software) {
        h.push_str("<p class=\"warn\">Runs marked (software) used a software rasterizer (lavapipe): their times say nothing about GPU speed; they prove the kernels, not their speed.</p>\n");
    }
    if runs.all.iter().any(|r| r.m.noisy) {
        h.push_str("<p class=\"warn\">Runs marked noisy spread more than their document's threshold around the median: measure them again before quoting them.</p>\n");
    }
    h.push_str("<h2>Machines</h2>\n");
    let machines: Vec<Vec<String>> = inputs
        .compare
        .iter()
        .map(|(p, d)| {
            let m = &d.machine;
            vec![
                m.name.clone(),
                m.cpu_model.clone(),
                m.cores.to_string(),
                m.memory_bytes
                    .map_or("?".into(), |b| format!("{:.1} GB", b as f64 / 1e9)),
                m.os.clone(),
                m.adapters
                    .iter()
                    .map(|a| {
                        format!(
                            "{} ({}, {}{}; bindings up to {} B)",
                            a.name,
                            a.backend,
                            a.driver,
                            if a.software { ", software" } else { "" },
                            a.max_storage_binding
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                format!(
                    "{} ({}, cryptodl {})",
                    p.display(),
                    d.created,
                    d.cryptodl_version
                ),
            ]
        })
        .collect();
    table(
        &mut h,
        &[
            "machine",
            "CPU",
            "cores",
            "memory",
            "OS",
            "GPU adapters",
            "document",
        ],
        &machines,
    );
    h.push_str("<h2>Measurements</h2>\n");
    let rows: Vec<Vec<String>> = runs
        .all
        .iter()
        .map(|r| {
            let m = r.m;
            vec![
                r.name.clone(),
                m.packing.clone(),
                m.preset.clone(),
                time(m.seconds_median),
                format!("{} .. {}", time(m.seconds_min), time(m.seconds_max)),
                format!(
                    "{:.1}%{}",
                    100.0 * m.spread,
                    if m.noisy { " noisy" } else { "" }
                ),
                m.seconds_all.len().to_string(),
                short(m.images_per_hour),
                format!("{:.2} GB", m.peak_memory_bytes as f64 / 1e9),
                format!(
                    "{:.1}% of {} ({} beyond a near-tie), max |err| {:.1e}",
                    100.0 * m.argmax_agreement,
                    m.checked_samples,
                    m.disagreements_beyond_ties,
                    m.max_logit_error
                ),
            ]
        })
        .collect();
    table(
        &mut h,
        &[
            "run",
            "packing",
            "preset",
            "median",
            "min .. max",
            "spread",
            "repeats",
            "images/hour",
            "peak tensors",
            "same argmax as plaintext",
        ],
        &rows,
    );
    h.push_str("<h2>Ratios</h2>\n<p>Median against median, from one document each (ratios within one run are what these shared machines can tell).</p>\n");
    let ratios: Vec<Vec<String>> = gpu_cpu_ratios(inputs)
        .into_iter()
        .map(|r| r.to_vec())
        .collect();
    table(
        &mut h,
        &["machine", "packing", "run", "against", "time ratio", "from"],
        &ratios,
    );
    let seal: Vec<Vec<String>> = seal_ratios(inputs)
        .into_iter()
        .map(|r| r.to_vec())
        .collect();
    if !seal.is_empty() {
        h.push_str("<h3>Ours against Microsoft SEAL (bench ops)</h3>\n");
        table(
            &mut h,
            &[
                "preset",
                "op",
                "ours (us)",
                "SEAL (us)",
                "ours / SEAL",
                "from",
            ],
            &seal,
        );
    }
    h.push_str("<h2>Charts</h2>\n");
    for ((file, title, caption), s) in CHARTS.iter().zip(svgs) {
        let body = s.trim_start_matches(|c| c != '<');
        let body = body
            .strip_prefix("<?xml")
            .map_or(body, |r| r.split_once("?>").map_or(r, |x| x.1));
        let _ = write!(
            h,
            "<figure id=\"{}\"><h3>{}</h3>\n{}\n<figcaption>{} (<a href=\"{file}\">{file}</a>)</figcaption></figure>\n",
            file.trim_end_matches(".svg"),
            esc(title),
            body.trim(),
            esc(caption)
        );
    }
    // Marks the page as drawn: every figure holds a rendered chart (what the browser test
    // reads back from the page).
    h.push_str(
        "<script>\n(function(){var n=0;document.querySelectorAll('figure').forEach(function(f){\
         var s=f.querySelector('svg');if(s&&s.getBBox().width>0)n++;});\
         document.body.setAttribute('data-charts-rendered',String(n));})();\n</script>\n",
    );
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers_and_times() {
        assert_eq!(short(7_400_000.0), "7.40M");
        assert_eq!(short(164_000.0), "164k");
        assert_eq!(short(12.345), "12.3");
        assert_eq!(time(2.0), "2.00 s");
        assert_eq!(time(0.059), "59.00 ms");
        assert_eq!(time(2.5e-5), "25.0 us");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
