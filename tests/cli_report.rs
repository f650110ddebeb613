//! `bench compare` on a tiny model, then `bench report` of it: the JSON document, the SVGs
//! holding the plotted values, and the page loaded in a real headless browser (chromium).

mod common;

use common::job::{cryptodl, fails_with, json, model};
use std::path::Path;
use std::process::Command;

/// A time as the report writes it (`report.rs` `time`).
fn time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

/// A number as the report writes it (`report.rs` `short`).
fn short(x: f64) -> String {
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

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The text elements of `svg`, trimmed.
fn texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split('<').next()?.trim()))
        .collect()
}

/// `text` is drawn as an SVG text element of `svg` (alone, or before a parenthesised remark
/// such as "(noisy)").
fn drawn(svg: &str, text: &str, file: &str) {
    let t = text.replace('&', "&amp;").replace('<', "&lt;");
    let all = texts(svg);
    assert!(
        all.iter()
            .any(|d| *d == t || d.starts_with(&format!("{t} ("))),
        "{file} does not draw `{text}`; it draws: {all:?}"
    );
}

/// The compare run of the tiny model (CPU 1 and 2 threads, the GPU when there is one, both
/// packings) and its report with a second machine beside it.
#[test]
fn compare_then_report_draws_every_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("tiny.safetensors");
    model(1, 0.35).save(&m).unwrap();
    let gpu = common::gpu().is_some();
    let out = dir.path().join("results/c.json");
    let (ok, stdout, stderr) = cryptodl(&[
        "bench",
        "compare",
        "--model",
        m.to_str().unwrap(),
        "--preset",
        "toy4096",
        "--insecure",
        "--backends",
        if gpu { "cpu,gpu" } else { "cpu" },
        "--threads",
        "1,2",
        "--packing",
        "batch,latency",
        "--batches",
        "2",
        "--images",
        "3",
        "--in-flight",
        "1,2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let doc = json(&stdout);
    assert_eq!(
        doc,
        json(&read(&out)),
        "--json prints the document it writes"
    );
    assert_eq!(doc["kind"], "cryptodl bench compare");
    assert_eq!(doc["insecure"], true);
    assert!(doc["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(doc["machine"]["cpu_model"].as_str().is_some());
    let ms = doc["measurements"].as_array().unwrap();
    let targets = if gpu { 3 } else { 2 };
    assert_eq!(ms.len(), 2 * targets, "{stdout}");
    assert_eq!(doc["failures"].as_array().unwrap().len(), 0);
    for x in ms {
        let label = x["label"].as_str().unwrap();
        let (lo, med, hi) = (
            x["seconds_min"].as_f64().unwrap(),
            x["seconds_median"].as_f64().unwrap(),
            x["seconds_max"].as_f64().unwrap(),
        );
        assert!(
            0.0 < lo && lo <= med && med <= hi,
            "{label}: {lo} {med} {hi}"
        );
        let spread = x["spread"].as_f64().unwrap();
        assert_eq!(x["noisy"].as_bool().unwrap(), spread > 0.10, "{label}");
        // Every figure is checked against the plaintext reference.
        assert!(x["checked_samples"].as_u64().unwrap() > 0, "{label}");
        assert_eq!(x["disagreements_beyond_ties"], 0, "{label}");
        let software = x["software"].as_bool().unwrap();
        if let Some(a) = x["adapter"].as_str() {
            let lavapipe = a.contains("llvmpipe") || a.contains("lavapipe");
            assert_eq!(software, lavapipe, "{a}");
            if software {
                assert!(label.contains("software"), "{label}");
            }
        } else {
            assert!(!software);
        }
        if x["packing"] == "batch" {
            let points = x["in_flight"].as_array().unwrap();
            assert_eq!(points[0]["batches_in_flight"], 1);
            let threads = x["threads"].as_u64().unwrap();
            // A second batch in flight only where the pool has a second thread.
            assert_eq!(points.len(), if threads >= 2 { 2 } else { 1 }, "{label}");
            assert!(!x["steps"].as_array().unwrap().is_empty());
        }
    }

    // A second machine: the same document under another name, drawn side by side.
    let mut other = doc.clone();
    other["machine"]["name"] = "other-box".into();
    let other_path = dir.path().join("results/other.json");
    std::fs::write(&other_path, serde_json::to_string(&other).unwrap()).unwrap();
    let rep = dir.path().join("report");
    let (ok, stdout, stderr) = cryptodl(&[
        "bench",
        "report",
        out.to_str().unwrap(),
        other_path.to_str().unwrap(),
        "--out",
        rep.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("on 2 machines"), "{stdout}");
    let svg = |f: &str| read(&rep.join(f));
    let (layers, throughput, latency, threads, memory, roofline) = (
        svg("layers.svg"),
        svg("throughput.svg"),
        svg("latency.svg"),
        svg("threads.svg"),
        svg("memory.svg"),
        svg("roofline.svg"),
    );
    let name = doc["machine"]["name"].as_str().unwrap();
    for x in ms {
        let label = x["label"].as_str().unwrap();
        // The latency panels: every median, on both machines.
        drawn(
            &latency,
            &time(x["seconds_median"].as_f64().unwrap()),
            "latency.svg",
        );
        let gb = format!("{:.2} GB", x["peak_memory_bytes"].as_f64().unwrap() / 1e9);
        drawn(&memory, &gb, "memory.svg");
        if x["packing"] == "batch" {
            for s in x["steps"].as_array().unwrap() {
                drawn(&layers, &time(s["seconds"].as_f64().unwrap()), "layers.svg");
            }
            for p in x["in_flight"].as_array().unwrap() {
                drawn(
                    &throughput,
                    &short(p["images_per_hour"].as_f64().unwrap()),
                    "throughput.svg",
                );
            }
            if x["backend"] == "cpu" {
                assert!(
                    threads.contains(&format!("{name} batch packing")),
                    "{label}"
                );
            }
        }
    }
    assert!(latency.contains("other-box: cpu 1 thread"));
    drawn(&threads, "1.00", "threads.svg");
    assert!(threads.contains("ideal from 1 thread"));
    if gpu {
        assert!(
            roofline.contains("achieved"),
            "roofline.svg draws no achieved point"
        );
        assert!(latency.contains("(software)") == ms.iter().any(|x| x["software"] == true));
    }

    let html = read(&rep.join("index.html"));
    assert_eq!(html.matches("<svg").count(), 6, "six inline charts");
    for url in ["http://", "https://", "<link", "src="] {
        let outside = html
            .match_indices(url)
            .filter(|(i, _)| {
                // The SVG namespace is a name, not a fetch.
                !html[..*i].ends_with("xmlns=\"") && !html[..*i].ends_with("xmlns:xlink=\"")
            })
            .count();
        assert_eq!(outside, 0, "the page reaches outside itself ({url})");
    }
    assert!(html.contains("other-box"));
    if ms.iter().any(|x| x["software"] == true) {
        assert!(
            html.contains("software"),
            "lavapipe runs are labelled software"
        );
    }
    browser_loads(&rep.join("index.html"));

    // Refusals: no results, a file that is not a compare document.
    fails_with(
        &["bench", "report", "--out", rep.to_str().unwrap()],
        &["RESULTS"],
    );
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"kind\": \"something else\"}").unwrap();
    fails_with(
        &[
            "bench",
            "report",
            bogus.to_str().unwrap(),
            "--out",
            rep.to_str().unwrap(),
        ],
        &[bogus.to_str().unwrap()],
    );
}

/// Loads `page` in headless chromium: the page's script counts the drawn charts, no error is
/// thrown, and a screenshot lands in the test's output directory. Without chromium the test
/// skips loudly, or fails where `CRYPTODL_REQUIRE_CHROMIUM=1` (CI).
fn browser_loads(page: &Path) {
    let required = std::env::var("CRYPTODL_REQUIRE_CHROMIUM").as_deref() == Ok("1");
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(chromium) = chromium else {
        assert!(
            !required,
            "CRYPTODL_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)"
        );
        eprintln!("SKIPPED: the report's browser check (apt-get install chromium to run it)");
        return;
    };
    let runtime = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let browse = |extra: &[&str]| {
        let out = Command::new("timeout")
            .arg("120")
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--enable-logging=stderr",
                "--window-size=1280,2400",
            ])
            .arg(format!(
                "--user-data-dir={}",
                runtime.path().join("profile").display()
            ))
            .args(extra)
            .arg(&url)
            .env("XDG_RUNTIME_DIR", runtime.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{chromium} failed: {stderr}");
        for bad in ["Uncaught", "Failed to load resource", "ERR_FILE_NOT_FOUND"] {
            assert!(!stderr.contains(bad), "the page logged `{bad}`: {stderr}");
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = browse(&["--dump-dom"]);
    assert!(
        dom.contains("data-charts-rendered=\"6\""),
        "the browser did not draw the six charts: {}",
        &dom[..dom.len().min(400)]
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-report.png");
    let _ = std::fs::remove_file(&shot);
    browse(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        shot.display()
    );
    eprintln!("screenshot of the report: {}", shot.display());
}
