//! The command line as a user meets it: flags that work, and flags that fail with a clear
//! message and a non-zero exit instead of a panic.

use std::process::{Command, Output};

fn batchnorm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batchnorm"))
        .args(args)
        .output()
        .expect("the batchnorm binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failing command: exit code not 0, no panic, and a message containing every `needle`.
fn assert_refused(args: &[&str], needles: &[&str]) {
    let out = batchnorm(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: message lacks {n:?}: {err}");
    }
}

#[test]
fn train_writes_metrics_as_csv_and_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    for (file, check) in [("m.csv", true), ("m.jsonl", false)] {
        let path = dir.path().join(file);
        let out = batchnorm(&[
            "train",
            "--data",
            "synthetic:600,100,20,3",
            "--hidden",
            "16,16",
            "--bn",
            "before",
            "--steps",
            "40",
            "--batch-size",
            "20",
            "--eval-every",
            "20",
            "--quiet",
            "--metrics",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "train failed: {}", stderr(&out));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let accuracy = |a: Option<f64>| a.is_some_and(|a| (0.0..=1.0).contains(&a));
        if check {
            let header: Vec<&str> = lines[0].split(',').collect();
            let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
            assert_eq!(header.len(), 8, "{text}");
            // Header, then evaluations at steps 0, 20 and 40.
            assert_eq!(lines.len(), 4, "{text}");
            for row in &lines[1..] {
                let row: Vec<&str> = row.split(',').collect();
                assert_eq!(row.len(), header.len(), "{text}");
                assert!(accuracy(row[col("test_accuracy")].parse().ok()), "{text}");
                assert!(accuracy(row[col("test_accuracy_running")].parse().ok()), "{text}");
                assert_eq!(row[col("eval_stats")], "population", "{text}");
            }
        } else {
            assert_eq!(lines.len(), 3, "{text}");
            for l in lines {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(v["step"].is_u64() && v["train_loss"].is_number() || v["step"] == 0);
                assert!(accuracy(v["test_accuracy"].as_f64()), "{l}");
                assert!(accuracy(v["test_accuracy_running"].as_f64()), "{l}");
                assert_eq!(v["eval_stats"], "population", "{l}");
            }
        }
    }
}

#[test]
fn resume_refuses_to_append_to_a_csv_file_of_other_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, csv) = (dir.path().join("c.safetensors"), dir.path().join("m.csv"));
    let (ckpt, csv) = (ckpt.to_str().unwrap(), csv.to_str().unwrap());
    let common = [
        "train",
        "--data",
        "synthetic:600,100,20,3",
        "--hidden",
        "8",
        "--bn",
        "before",
        "--batch-size",
        "20",
        "--eval-every",
        "10",
        "--quiet",
        "--metrics",
        csv,
    ];
    let first = batchnorm(&[&common[..], &["--steps", "10", "--checkpoint", ckpt]].concat());
    assert!(first.status.success(), "{}", stderr(&first));
    let resume = [&common[..], &["--steps", "20", "--resume", ckpt]].concat();
    // The file as this version wrote it takes the rows of the continued run.
    let again = batchnorm(&resume);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(csv).unwrap().lines().count(), 1 + 3);
    // Under an older header it is refused, and left as it was.
    let old = "step,train_loss,train_accuracy,test_loss,test_accuracy,train_seconds\n0,NaN,,1,0.5,0\n";
    std::fs::write(csv, old).unwrap();
    assert_refused(&resume, &[csv, "header", "new file"]);
    assert_eq!(std::fs::read_to_string(csv).unwrap(), old);
}

#[test]
fn train_refuses_bad_flags() {
    assert_refused(&["train", "--bn", "sideways"], &["none", "before", "after"]);
    assert_refused(&["train", "--init", "normal:-1"], &["normal"]);
    assert_refused(&["train", "--lr", "nan", "--data", "synthetic"], &["lr"]);
    assert_refused(&["train", "--hidden", "100,0", "--data", "synthetic"], &["0"]);
    assert_refused(
        &["train", "--threads", "5000", "--data", "synthetic"],
        &["5000", "1024"],
    );
    assert_refused(
        &["train", "--data", "/nonexistent/folder"],
        &["/nonexistent/folder"],
    );
    assert_refused(
        &["train", "--eval-stats", "median"],
        &["median", "population or running"],
    );
    // 6000 synthetic training examples hold 100 batches of 60, not 101.
    assert_refused(
        &[
            "train",
            "--data",
            "synthetic",
            "--bn",
            "before",
            "--population-batches",
            "101",
            "--quiet",
        ],
        &["101 batches of 60 need 6060 training examples", "6000"],
    );
}

#[test]
fn train_on_a_damaged_data_folder_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(dir.path().join(name), b"\x00\x00\x08\x03garbage").unwrap();
    }
    assert_refused(&["train", "--data", dir.path().to_str().unwrap()], &["ubyte"]);
}

/// Layer widths and batch sizes whose buffers cannot fit are refused with a clear error
/// (they used to abort the process in the allocator).
#[test]
fn train_refuses_networks_too_large_for_memory() {
    let data = "synthetic:600,100,20,3";
    assert_refused(
        &["train", "--data", data, "--hidden", "1000000000", "--steps", "2"],
        &["GiB", "available"],
    );
    assert_refused(
        &[
            "train",
            "--data",
            data,
            "--hidden",
            "16",
            "--batch-size",
            "100000000000",
            "--steps",
            "2",
        ],
        &["100000000000", "available"],
    );
    assert_refused(
        &[
            "train",
            "--data",
            data,
            "--hidden",
            "18446744073709551615",
            "--steps",
            "2",
        ],
        &["more memory than can be addressed"],
    );
}

/// Shapes whose buffers cannot fit are refused before anything runs (they used to abort
/// the process in the allocator), and a JSON file of earlier rows is left as it was.
#[test]
fn bench_refuses_shapes_too_large_for_memory() {
    // 4 TB per tensor, four tensors.
    assert_refused(
        &["bench", "--shape", "4x4", "--shape", "1000000x1000000"],
        &["1000000x1000000", "GiB", "available"],
    );
    assert_refused(
        &["bench", "--shape", "99999999999x99999999999x9999999999"],
        &["more elements than memory can address"],
    );
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("rows.jsonl");
    std::fs::write(&kept, "earlier rows\n").unwrap();
    let kept_arg = kept.to_str().unwrap();
    assert_refused(
        &["bench", "--shape", "1000000x1000000", "--json", kept_arg],
        &["GiB"],
    );
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "earlier rows\n");
    // A JSON path that cannot be written fails before the benchmark runs: no table.
    let missing = dir.path().join("no_such_dir").join("rows.jsonl");
    let missing = missing.to_str().unwrap();
    let args = ["bench", "--shape", "4x4", "--budget-ms", "1", "--json", missing];
    assert_refused(&args, &["no_such_dir"]);
    let out = batchnorm(&args);
    assert!(
        out.stdout.is_empty(),
        "the benchmark ran before the path was checked"
    );
}

#[test]
fn bench_refuses_bad_shapes_and_runs_a_small_one() {
    assert_refused(&["bench", "--shape", "0x3"], &["0x3"]);
    assert_refused(&["bench", "--shape", "7"], &["7"]);
    assert_refused(
        &["bench", "--threads", "100000", "--shape", "4x4"],
        &["100000", "1024"],
    );
    assert_refused(&["bench", "--threads", "two"], &["two"]);
    let out = batchnorm(&["bench", "--shape", "8x3x5", "--budget-ms", "5", "--json", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Three ops for each of the two layouts.
    assert_eq!(rows.len(), 6, "{text}");
    for r in &rows {
        assert_eq!(r["shape"], "8x3x5");
        assert!(r["median_ms"].as_f64().is_some_and(|v| v > 0.0));
        assert!(r["copy_ms"].as_f64().is_some_and(|v| v > 0.0));
        assert!(["channels_first", "channels_last"].contains(&r["layout"].as_str().unwrap()));
        assert!(["train_forward", "eval_forward", "forward_backward"].contains(&r["op"].as_str().unwrap()));
    }
}
