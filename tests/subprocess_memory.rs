//! 50 children flooding their parent with big reports and oversized lines at once: the
//! parent's memory stays within the per-child bounds (RSS figure printed), reports are cut to
//! the node limit and oversized lines are counted as garbage. Its own binary, so no other test
//! shares the RSS.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tracing_progress::process::{self, CommandExt, MAX_REPORT_NODES};
use tracing_subscriber::prelude::*;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn fifty_flooding_children_keep_parent_memory_bounded() {
    const CHILDREN: usize = 50;
    const SECONDS: u32 = 6;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/subprocess/encoder.py");
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    let before = process::stats();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("fan_out", progress.level = "block");
        let _g = span.enter();
        let baseline = rss_bytes();
        let mut children: Vec<_> = (0..CHILDREN)
            .map(|_| {
                Command::new("python3")
                    .arg(&script)
                    .arg(SECONDS.to_string())
                    .arg("flood")
                    .spawn_tracked()
                    .expect("python3")
            })
            .collect();
        let start = Instant::now();
        let (mut samples, mut largest_graft) = (Vec::new(), 0usize);
        while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
            samples.push((start.elapsed(), rss_bytes()));
            if let Some(op) = store.active().first() {
                for sp in &op.root.children {
                    let n = sp.children.iter().map(|c| c.walk().count()).sum::<usize>();
                    largest_graft = largest_graft.max(n);
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let after = process::stats();
        let half = start.elapsed() / 2;
        let peak_of = |first: bool| {
            samples
                .iter()
                .filter(|(t, _)| (*t < half) == first)
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(0)
        };
        let (early_peak, late_peak) = (peak_of(true), peak_of(false));
        let peak = early_peak.max(late_peak);
        let growth = peak.saturating_sub(baseline);
        println!(
            "figure: {CHILDREN} children flooding for {SECONDS} s: parent RSS baseline {:.1} MiB, \
             peak {:.1} MiB (+{:.1} MiB; first half of the run {:.1} MiB, second half {:.1} MiB); {} reports applied, \
             {} garbage lines, {} nodes dropped; largest graft {largest_graft} nodes",
            baseline as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            growth as f64 / 1048576.0,
            early_peak as f64 / 1048576.0,
            late_peak as f64 / 1048576.0,
            after.reports - before.reports,
            after.garbage - before.garbage,
            after.nodes_dropped - before.nodes_dropped,
        );
        assert!(after.reports - before.reports >= CHILDREN as u64);
        assert!(after.garbage > before.garbage, "oversized lines counted");
        assert!(
            after.nodes_dropped > before.nodes_dropped,
            "reports cut to the limit"
        );
        assert!(largest_graft <= MAX_REPORT_NODES, "{largest_graft}");
        // Per child at most one line buffer (512 KiB) and one kept report (1,000 nodes, about
        // 1 MiB with these 200-byte messages); reports parsed two at a time process-wide; plus
        // the snapshots this loop takes, which copy every graft. A few MiB per child whatever
        // it sends and however long. (The halves are printed, not compared: on a loaded
        // machine the 50 interpreters start over seconds.)
        assert!(
            growth < CHILDREN as u64 * 6 * 1024 * 1024,
            "parent RSS grew by {} MiB",
            growth / 1048576
        );
    });
}
