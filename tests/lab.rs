//! The lab end to end: `batchnorm lab --quick` runs every experiment and writes a report
//! whose every referenced file exists, whose every section has its numbers, and whose
//! every image loads in headless Chromium.
//!
//! The browser check needs Debian's `chromium` (installed by `.ci/run`); set
//! `BATCHNORM_SKIP_BROWSER=1` to skip it on a machine without one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use batchnorm::lab::{NAMES, report::verify_report};

/// Runs the quick lab once for all tests of this file; returns the report folder.
fn quick_report() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, out) = DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temporary folder");
        let out = tmp.path().join("report");
        let status = Command::new(env!("CARGO_BIN_EXE_batchnorm"))
            .args(["lab", "--quick", "--quiet", "--out"])
            .arg(&out)
            .status()
            .expect("the batchnorm binary runs");
        assert!(status.success(), "batchnorm lab --quick failed: {status}");
        (tmp, out)
    });
    out
}

#[test]
fn quick_lab_report_is_complete() {
    let dir = quick_report();
    let summary = verify_report(dir).unwrap_or_else(|e| panic!("report check failed: {e}"));
    let names: Vec<&str> = summary.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, NAMES, "one section per experiment, in order");
    for s in &summary.sections {
        assert!(s.images >= 1, "{}: no plot", s.name);
        assert!(s.numbers >= 1, "{}: no numbers", s.name);
    }
    for f in &summary.files {
        assert!(f.is_file(), "referenced file {} is missing", f.display());
    }
    // Every plot exists as SVG and PNG.
    let plots = std::fs::read_dir(dir.join("plots")).expect("plots folder");
    let svgs: Vec<PathBuf> = plots
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .collect();
    assert!(svgs.len() >= NAMES.len());
    for svg in svgs {
        assert!(
            svg.with_extension("png").is_file(),
            "no PNG for {}",
            svg.display()
        );
    }
    // results.json: one object per experiment with its finding and numbers.
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    for name in NAMES {
        let entry = &results[name];
        assert!(entry.is_object(), "results.json has no {name}");
        let finding = entry["finding"].as_str().unwrap_or("");
        assert!(!finding.is_empty(), "{name}: empty finding");
    }
}

#[test]
fn unknown_experiment_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_batchnorm"))
        .args(["lab", "no-such-experiment", "--quick", "--quiet", "--out"])
        .arg(std::env::temp_dir().join("batchnorm-never-written"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown experiment") && err.contains("paper-fig1"),
        "{err}"
    );
}

#[test]
fn every_image_loads_in_headless_chromium() {
    if std::env::var_os("BATCHNORM_SKIP_BROWSER").is_some() {
        eprintln!("skipped: BATCHNORM_SKIP_BROWSER is set");
        return;
    }
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed (apt-get install chromium), or set BATCHNORM_SKIP_BROWSER=1");
    let dir = quick_report();
    // A copy of the page, beside it so relative paths hold, that reports on its images
    // once everything has loaded.
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let probe = r#"<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const p = document.createElement('pre');
  p.id = 'image-check';
  p.textContent = 'IMAGES ' + imgs.length + ' BROKEN ' + bad.length + ' ' + bad.join(' ');
  document.body.appendChild(p);
});
</script></body>"#;
    let checked = dir.join("image-check.html");
    std::fs::write(&checked, html.replace("</body>", probe)).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", checked.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let line = dom
        .lines()
        .find_map(|l| l.split("id=\"image-check\">IMAGES ").nth(1))
        .unwrap_or_else(|| {
            panic!(
                "the check did not run; chromium said: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let line = line.split("</pre>").next().unwrap_or(line);
    let mut words = line.split_whitespace();
    let total: usize = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("BROKEN"));
    let broken: usize = words.next().unwrap().parse().unwrap();
    assert!(total >= NAMES.len(), "only {total} images on the page");
    assert_eq!(broken, 0, "images that did not load: {line}");
}
