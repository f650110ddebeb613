//! `cryptodl approx`: fit polynomial approximations of an activation and compare methods.

use crate::io::write_bytes_atomic;
use crate::nn::activation::ActFn;
use crate::nn::fit::{fit, Fit, FitMethod};
use anyhow::Context;
use std::path::PathBuf;

/// Arguments of `cryptodl approx`.
///
/// Example: `cryptodl approx --fn relu --degree 2 --interval 8 --method all --plot relu2.svg`
/// prints one row per method with the coefficients (degree 0 first) and the errors, and draws
/// the function with its approximations.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  cryptodl approx --fn relu --degree 2 --interval 8 --method all --plot relu2.svg\n  cryptodl approx --fn tanh --degree 3 --interval 8 --method minimax --json"
)]
pub struct ApproxArgs {
    /// Function to approximate: relu, sigmoid, tanh, gelu or silu.
    #[arg(long = "fn", default_value = "relu")]
    func: ActFn,
    /// Polynomial degree (2 to 8 is the useful range; each degree costs multiplicative depth).
    #[arg(long, default_value_t = 2)]
    degree: usize,
    /// Half-width a of the fitting interval [-a, a]; pick it to cover the activation inputs
    /// (`cryptodl eval` reports their range).
    #[arg(long, default_value_t = 8.0)]
    interval: f64,
    /// legendre (least squares), chebyshev (interpolation), minimax (Remez), derivative
    /// (CryptoDL: fit the derivative, integrate) or all.
    #[arg(long, default_value = "all")]
    method: String,
    /// Standard deviation of the Gaussian input for the "gauss MAE" column.
    #[arg(long, default_value_t = 1.0)]
    sigma: f64,
    /// Write an SVG plot of the function and its approximations to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print JSON (an array of fits) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `cryptodl approx`.
pub fn run(args: ApproxArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.plot {
        // It reads nothing, but never replaces a key or a job's file.
        crate::io::ReadSet::new().check_output(p, "--plot")?;
    }
    let methods: Vec<FitMethod> = if args.method.eq_ignore_ascii_case("all") {
        FitMethod::ALL.to_vec()
    } else {
        vec![args
            .method
            .parse::<FitMethod>()
            .map_err(anyhow::Error::msg)?]
    };
    let fits = methods
        .iter()
        .map(|&m| fit(args.func, args.degree, args.interval, m, args.sigma))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(p) = &args.plot {
        plot(&fits, p).with_context(|| format!("writing plot {}", p.display()))?;
    }
    if args.json {
        return super::output::print_json(&fits);
    }
    println!(
        "{} degree {} on [-{a}, {a}] (gauss MAE: input ~ N(0, {}^2))",
        args.func,
        args.degree,
        args.sigma,
        a = args.interval
    );
    println!(
        "{:<11} {:>10} {:>10} {:>10}  coefficients (degree 0 first)",
        "method", "max err", "mean err", "gauss MAE"
    );
    for f in &fits {
        let c: Vec<String> = f.coefficients.iter().map(|c| format!("{c:.6}")).collect();
        println!(
            "{:<11} {:>10.5} {:>10.5} {:>10.5}  [{}]",
            f.method.name(),
            f.max_abs_error,
            f.mean_abs_error,
            f.gaussian_mean_abs_error,
            c.join(", ")
        );
    }
    if let Some(p) = &args.plot {
        println!("plot written to {}", p.display());
    }
    Ok(())
}

fn plot(fits: &[Fit], path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let Some(first) = fits.first() else {
        return Ok(());
    };
    let a = first.interval;
    let n = 400;
    let xs: Vec<f64> = (0..=n)
        .map(|i| -a + 2.0 * a * i as f64 / n as f64)
        .collect();
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = vec![(
        first.func.name().to_string(),
        xs.iter().map(|&x| (x, first.func.eval(x))).collect(),
    )];
    for f in fits {
        let p = f.polynomial();
        curves.push((
            format!("{} (max err {:.3})", f.method.name(), f.max_abs_error),
            xs.iter().map(|&x| (x, p.eval(x))).collect(),
        ));
    }
    let (lo, hi) = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold((f64::MAX, f64::MIN), |(l, h), y| (l.min(y), h.max(y)));
    let pad = 0.05 * (hi - lo).max(1e-9);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{} degree {} on [-{a}, {a}]", first.func, first.degree),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(-a..a, (lo - pad)..(hi + pad))?;
        chart.configure_mesh().draw()?;
        let colors = [BLACK, RED, BLUE, GREEN, MAGENTA, CYAN];
        for (i, (name, pts)) in curves.into_iter().enumerate() {
            let color = colors[i % colors.len()];
            let width = if i == 0 { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(width)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    write_bytes_atomic(path, svg.as_bytes())?;
    Ok(())
}
