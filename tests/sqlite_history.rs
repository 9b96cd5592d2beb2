//! SQLite history (feature `sqlite`): the file survives restarts, is shared by processes and
//! keeps operations that were running when their process was killed.

use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_progress::sqlite::HistoryFile;
use tracing_progress::{Builder, HistoryQuery, ProgressSpanExt, Status, Store};
use tracing_subscriber::prelude::*;

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tp-sqlite-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

type Sub = tracing_subscriber::layer::Layered<
    tracing_progress::ProgressLayer<tracing_subscriber::Registry>,
    tracing_subscriber::Registry,
>;

fn build(path: &Path) -> (Sub, Store) {
    let (layer, store) = Builder::new()
        .history_file(path)
        .estimate_interval(None)
        .build()
        .unwrap();
    (tracing_subscriber::registry().with(layer), store)
}

/// One operation `name` with `children` child nodes; failed when `fail`.
/// The history file's write warning among the store's warnings (the test fails without one).
fn write_warning(stats: &tracing_progress::StoreStats) -> &tracing_progress::SetupWarning {
    stats
        .warnings
        .iter()
        .find(|w| w.code() == tracing_progress::sqlite::WRITE_WARNING)
        .expect("a warning")
}

fn operation(name: &str, children: usize, fail: bool) {
    let root = tracing::info_span!("job", progress.level = "job", progress.name = name);
    let _g = root.enter();
    root.set_total(children as u64);
    for i in 0..children {
        let child = tracing::info_span!("step", progress.level = "step", progress.name = i);
        let _c = child.enter();
    }
    if fail {
        root.fail("broken");
    }
}

#[test]
fn bad_paths_fail_at_build() {
    let dir = temp_dir("bad");
    let err = |p: &Path| {
        Builder::new()
            .history_file(p)
            .build::<tracing_subscriber::Registry>()
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let missing = err(&dir.join("nope").join("h.db"));
    assert!(missing.contains("does not exist"), "{missing}");

    let garbage = dir.join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
    let msg = err(&garbage);
    assert!(msg.contains("not a SQLite database"), "{msg}");

    let other = dir.join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER);")
        .unwrap();
    let msg = err(&other);
    assert!(msg.contains("something else"), "{msg}");

    let newer = dir.join("newer.db");
    drop(build(&newer));
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("UPDATE tracing_progress_schema SET version = 99;")
        .unwrap();
    let msg = err(&newer);
    assert!(msg.contains("newer tracing-progress"), "{msg}");
    // Read-only is still possible.
    assert_eq!(HistoryFile::open(&newer).unwrap().schema_version(), 99);

    let msg = Builder::new()
        .history_file_sync_full(true)
        .build::<tracing_subscriber::Registry>()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("history_file first"), "{msg}");
}

#[test]
fn history_survives_and_is_shared() {
    let dir = temp_dir("shared");
    let path = dir.join("history.db");
    let (sub, first) = build(&path);
    tracing::subscriber::with_default(sub, || {
        operation("alpha", 3, false);
        operation("beta", 2, true);
        operation("gamma", 1, false);
    });
    assert!(first.flush_history(Duration::from_secs(10)));
    let stats = first.stats();
    // Three finishes, and the starts not batched with their finish.
    assert!((3..=6).contains(&stats.history_file_written), "{stats:?}");
    assert_eq!(stats.history_file_dropped, 0);
    assert_eq!(stats.history_file_errors, 0);
    // Memory and file hold the same three: no duplicates.
    let names: Vec<_> = first
        .history(&HistoryQuery::new())
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["gamma", "beta", "alpha"]);

    // A second store on the same file (as a restarted process would be) sees the first's runs.
    let (sub2, second) = build(&path);
    assert_eq!(second.history(&HistoryQuery::new()).len(), 3);
    tracing::subscriber::with_default(sub2, || operation("delta", 1, false));
    assert!(second.flush_history(Duration::from_secs(10)));
    let all = second.history(&HistoryQuery::new());
    let names: Vec<_> = all.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["delta", "gamma", "beta", "alpha"]);
    let failed = second.history(&HistoryQuery::new().status(Status::Failed));
    assert_eq!(failed.len(), 1);
    assert_eq!(&*failed[0].name, "beta");
    assert!(failed[0].find(failed[0].root.id).is_some());
    assert_eq!(second.history(&HistoryQuery::new().limit(2)).len(), 2);
    assert_eq!(
        second
            .history(&HistoryQuery::new().name_contains("GAM"))
            .len(),
        1
    );
    // The first store sees the second's operation too.
    assert_eq!(first.history(&HistoryQuery::new()).len(), 4);

    // Read-only, no layer.
    let file = HistoryFile::open(&path).unwrap();
    let rows = file.query(&HistoryQuery::new()).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| !r.interrupted));
    assert_eq!(rows[0].pid, std::process::id());
    assert_ne!(rows[0].run, rows[1].run);
    let alpha = rows.iter().find(|r| &*r.state.name == "alpha").unwrap();
    assert_eq!(alpha.state.root.children.len(), 3);
    assert_eq!(file.get(alpha.state.id).unwrap().len(), 1);
}

#[test]
fn attempts_round_trip_through_the_file() {
    let dir = temp_dir("attempts");
    let path = dir.join("history.db");
    let (sub, store) = build(&path);
    tracing::subscriber::with_default(sub, || {
        let root = tracing::info_span!("job", progress.level = "job", progress.name = "retry");
        let _g = root.enter();
        for attempt in 1..=2 {
            let step = tracing::info_span!("step", progress.level = "step", progress.name = "s");
            let _s = step.enter();
            tracing::warn!(attempt, "flaky");
            if attempt == 1 {
                step.fail("first try failed");
            }
        }
    });
    assert!(store.flush_history(Duration::from_secs(10)));
    let in_memory = store.history(&HistoryQuery::new());
    let file = HistoryFile::open(&path).unwrap();
    let rows = file.query(&HistoryQuery::new()).unwrap();
    assert_eq!(rows.len(), 1);
    let stored = &rows[0].state;
    assert_eq!(
        stored.root, in_memory[0].root,
        "the tree comes back as it was stored"
    );
    let step = &stored.root.children[0];
    assert_eq!(stored.root.children.len(), 1);
    let a = step.attempts().expect("attempts in the file");
    assert_eq!(a.number, 2);
    let err = a.earlier[0].error.as_deref().unwrap();
    assert_eq!(&*err.message, "first try failed");
    assert_eq!(err.recent_events[0].message.as_deref(), Some("flaky"));
    assert_eq!(stored.metrics.retried, 1);
}

/// The child side of `killed_process_leaves_an_interrupted_row` (does nothing otherwise).
#[test]
fn child_writer() {
    let Ok(path) = std::env::var("TP_SQLITE_CHILD_DB") else {
        return;
    };
    let (sub, store) = build(Path::new(&path));
    tracing::subscriber::with_default(sub, || {
        for i in 0..5 {
            operation(&format!("done-{i}"), 2, false);
        }
        let root = tracing::info_span!("job", progress.level = "job", progress.name = "long");
        let _g = root.enter();
        let step = tracing::info_span!("step", progress.level = "step");
        let _s = step.enter();
        assert!(store.flush_history(Duration::from_secs(10)));
        println!("READY {}", store.stats().history_file_written);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

#[test]
fn killed_process_leaves_an_interrupted_row() {
    let dir = temp_dir("kill");
    let path = dir.join("history.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env("TP_SQLITE_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let written = loop {
        let line = lines.next().expect("child ended early").unwrap();
        // libtest prints `test child_writer ... ` on the same line.
        if let Some((_, n)) = line.split_once("READY ") {
            break n.trim().parse::<u64>().unwrap();
        }
        assert!(Instant::now() < deadline);
    };
    assert!(
        (6..=11).contains(&written),
        "5 finishes, 1 running start, and starts not batched with their finish: {written}"
    );
    // kill -9
    child.kill().unwrap();
    child.wait().unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    let file = HistoryFile::open(&path).unwrap();
    let rows = file.query(&HistoryQuery::new()).unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    let long = rows.iter().find(|r| &*r.state.name == "long").unwrap();
    assert!(long.interrupted);
    // Never running forever: it and its running step read cancelled, interrupted.
    assert_eq!(long.state.status, Status::Cancelled);
    let interrupted = |l: &tracing_progress::ProgressLevel| {
        l.status == Status::Cancelled
            && l.cancel_reason == Some(tracing_progress::CancelReason::Interrupted)
            && l.estimate().is_none()
    };
    assert!(interrupted(&long.state.root), "{:?}", long.state.root);
    assert_eq!(long.state.root.children.len(), 1, "{:?}", long.state.root);
    assert!(interrupted(&long.state.root.children[0]));
    assert_eq!(long.pid, pid);
    let done = rows
        .iter()
        .filter(|r| r.state.status == Status::Completed && !r.interrupted)
        .count();
    assert_eq!(done, 5);

    // The CLI reads the file with no server.
    #[cfg(feature = "cli")]
    {
        let out = cli(&["history", "--db", path.to_str().unwrap()]);
        assert!(
            out.lines()
                .any(|l| l.contains("interrupted") && l.contains("long")),
            "{out}"
        );
        assert_eq!(
            out.lines().filter(|l| l.contains("completed")).count(),
            5,
            "{out}"
        );
        let id = long.state.id.to_string();
        let out = cli(&["show", &id, "--db", path.to_str().unwrap()]);
        assert!(
            out.contains("long") && out.contains("interrupted: process"),
            "{out}"
        );
        let out = cli(&[
            "--json",
            "history",
            "--status",
            "cancelled",
            "--db",
            path.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["operations"][0]["interrupted"], true, "{out}");
        assert_eq!(v["operations"].as_array().unwrap().len(), 1);
        let out = cli(&[
            "--json",
            "history",
            "--status",
            "running",
            "--db",
            path.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["operations"].as_array().unwrap().len(), 0, "{out}");
    }

    // The next writer flags it explicitly (for readers on other hosts).
    let (_sub, store) = build(&path);
    let flagged: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM operations WHERE interrupted = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(flagged, 1);
    // The next process's history: cancelled (interrupted), not running.
    let running = store.history(&HistoryQuery::new().status(Status::Running));
    assert!(running.is_empty(), "{running:?}");
    let cancelled = store.history(&HistoryQuery::new().status(Status::Cancelled));
    assert_eq!(cancelled.len(), 1);
    assert_eq!(&*cancelled[0].name, "long");
    assert!(interrupted(&cancelled[0].root));
    let text = tracing_progress::view::Verbose::new(tracing_progress::view::Detail::Normal)
        .render(&cancelled[0]);
    assert!(text.contains("Cancelled (interrupted)"), "{text}");
}

/// The child side of `an_interrupted_operation_shows_its_last_checkpoint` (does nothing
/// otherwise): 40 units of a root, then `READY` once rows taken after the last unit are
/// committed, then it waits to be killed.
#[test]
fn child_checkpointing() {
    let Ok(path) = std::env::var("TP_SQLITE_CHECKPOINT_DB") else {
        return;
    };
    let (layer, store) = Builder::new()
        .history_file(&path)
        .history_file_checkpoint(Duration::from_millis(100))
        .estimate_interval(None)
        .build()
        .unwrap();
    let sub = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(sub, || {
        let root = tracing::info_span!(
            "job",
            progress.level = "job",
            progress.name = "checkpointed",
            progress.total = 100u64
        );
        let _g = root.enter();
        for _ in 0..40 {
            root.inc(1);
            std::thread::sleep(Duration::from_millis(5));
        }
        // Three more rows: the last taken after the last unit (a commit in flight when
        // counting began may hold an older snapshot).
        let before = store.stats().history_file_written;
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.stats().history_file_written < before + 3 {
            assert!(Instant::now() < deadline, "no checkpoints written");
            std::thread::sleep(Duration::from_millis(5));
        }
        println!("READY");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

/// A root killed while it runs reads interrupted with its progress at the last checkpoint,
/// not only as it was 50 ms after it started.
#[test]
fn an_interrupted_operation_shows_its_last_checkpoint() {
    let dir = temp_dir("checkpoint");
    let path = dir.join("history.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_checkpointing",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TP_SQLITE_CHECKPOINT_DB", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("child ended early").unwrap();
        if line.contains("READY") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = HistoryFile::open(&path)
        .unwrap()
        .query(&HistoryQuery::new())
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let op = &rows[0];
    assert!(op.interrupted);
    assert_eq!(op.state.status, Status::Cancelled);
    assert_eq!(op.state.root.current, 40, "{:?}", op.state.root);
    assert!(
        op.state.root.timing.elapsed_us >= 200_000,
        "elapsed at the checkpoint: {:?}",
        op.state.root.timing
    );
}

/// The child side of `killed_repeatedly_loses_nothing_acknowledged` (does nothing otherwise):
/// operations in a loop, each reported on stdout as it goes. `RUNNING i` once its running
/// row is committed, `FINISHING i` just before its root closes, `ACK i` once its final row is
/// committed. The acknowledgement is `StoreStats::history_file_written`, counted by the
/// writer after its transaction committed: a line is printed only after what it claims.
#[test]
fn child_looping_writer() {
    let (Ok(path), Ok(round)) = (
        std::env::var("TP_SQLITE_LOOP_DB"),
        std::env::var("TP_SQLITE_LOOP_ROUND"),
    ) else {
        return;
    };
    let (sub, store) = build(Path::new(&path));
    // The file is open (the kill must not land in the set-up, which the test is not about).
    println!("OPEN");
    let written = || store.stats().history_file_written;
    // Waits until the writer committed one more row than `before`.
    let committed = |before: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while written() <= before {
            assert!(Instant::now() < deadline, "no commit acknowledged in 20 s");
            std::thread::sleep(Duration::from_micros(200));
        }
        let s = store.stats();
        assert_eq!((s.history_file_errors, s.history_file_dropped), (0, 0));
    };
    let mut noise = std::collections::hash_map::RandomState::new().build_hasher();
    tracing::subscriber::with_default(sub, || {
        for i in 0.. {
            let name = format!("r{round}-op{i}");
            let before = written();
            let root = tracing::info_span!("job", progress.level = "job", progress.name = name);
            let g = root.enter();
            root.set_total(3);
            // The running row is written 50 ms after the start.
            committed(before);
            println!("RUNNING {i}");
            noise.write_u64(i);
            for step in 0..3 {
                let child =
                    tracing::info_span!("step", progress.level = "step", progress.name = step);
                let _c = child.enter();
                std::thread::sleep(Duration::from_micros(20_000 + noise.finish() % 20_000));
                noise.write_u8(step);
            }
            let before = written();
            println!("FINISHING {i}");
            drop(g);
            drop(root);
            committed(before);
            println!("ACK {i}");
        }
    });
}

/// The kill -9 test: a child writing operations in a loop is killed at a random
/// moment, five times, on the same file (every other round at a random moment inside an
/// operation's work, so that an interrupted row is certain). Afterwards every acknowledged operation is in the file
/// as completed, the file passes `PRAGMA integrity_check`, and the operation running at the
/// kill reads interrupted (or, killed between its last two lines, completed). Fails if a
/// commit was lost or acknowledged before it happened (an `ACK` without its row).
#[test]
fn killed_repeatedly_loses_nothing_acknowledged() {
    let dir = temp_dir("kill-loop");
    let path = dir.join("history.db");
    let mut noise = std::collections::hash_map::RandomState::new().build_hasher();
    let mut interrupted_seen = 0;
    let mut running_rows = 0;
    let mut acked_total = 0;
    for round in 0..5 {
        noise.write_u32(round);
        // 100 ms to 1.5 s: within the first operations or well into the loop.
        let delay = Duration::from_millis(100 + noise.finish() % 1_400);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_looping_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TP_SQLITE_LOOP_DB", &path)
            .env("TP_SQLITE_LOOP_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = open_tx.send(line.clone());
                lines.push(line);
            }
            lines
        });
        let next_line = || {
            open_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child stopped talking")
        };
        // The random delay starts once the child has opened the file.
        while !next_line().ends_with("OPEN") {}
        std::thread::sleep(delay);
        if round % 2 == 1 {
            // Every other round, a random moment inside an operation's work (60 to 120 ms
            // after its running row was acknowledged): an interrupted row is certain there.
            while open_rx.try_recv().is_ok() {} // said during the delay
            while !next_line().contains("RUNNING ") {}
            noise.write_u8(1);
            std::thread::sleep(Duration::from_millis(noise.finish() % 30));
        }
        // kill -9 (`Child::kill` sends SIGKILL on Unix)
        child.kill().unwrap();
        let exit = child.wait().unwrap();
        let lines = reader.join().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                exit.signal(),
                Some(9),
                "round {round}: the child ended before the kill: {lines:?}"
            );
        }
        // The last thing the child said of each operation.
        let mut last: std::collections::BTreeMap<u64, &str> = Default::default();
        for line in &lines {
            // libtest prints `running 1 test` and `test child_looping_writer ... ` first.
            let line = line.rsplit("... ").next().unwrap();
            for word in ["RUNNING ", "FINISHING ", "ACK "] {
                if let Some(i) = line.strip_prefix(word) {
                    last.insert(i.trim().parse().unwrap(), word.trim());
                }
            }
        }

        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        drop(conn);

        let file = HistoryFile::open(&path).unwrap();
        let rows: Vec<_> = file
            .query(&HistoryQuery::new())
            .unwrap()
            .into_iter()
            .filter(|r| r.pid == pid)
            .collect();
        let row = |i: u64| {
            let name = format!("r{round}-op{i}");
            let found: Vec<_> = rows.iter().filter(|r| *r.state.name == *name).collect();
            assert!(found.len() <= 1, "round {round}: {name} twice");
            found.first().copied()
        };
        let next = last.keys().next_back().map_or(0, |i| i + 1);
        for (&i, &said) in &last {
            let r = row(i);
            match said {
                "ACK" => {
                    let r = r.unwrap_or_else(|| {
                        panic!("round {round}: op{i} acknowledged, not in the file ({delay:?})")
                    });
                    assert_eq!(r.state.status, Status::Completed, "round {round} op{i}");
                    assert!(!r.interrupted);
                    acked_total += 1;
                }
                // Killed between its close and the acknowledgement: either is right.
                "FINISHING" => {
                    let r = r.unwrap_or_else(|| panic!("round {round}: op{i}'s running row lost"));
                    if r.interrupted {
                        assert_eq!(r.state.status, Status::Cancelled, "round {round} op{i}");
                        interrupted_seen += 1;
                        running_rows += 1;
                    } else {
                        assert_eq!(r.state.status, Status::Completed);
                    }
                }
                // Still running at the kill: its committed running row reads interrupted.
                _ => {
                    let r = r.unwrap_or_else(|| panic!("round {round}: op{i}'s running row lost"));
                    assert_eq!(r.state.status, Status::Cancelled, "round {round} op{i}");
                    assert!(r.interrupted, "round {round} op{i}");
                    assert!(r.state.completed_at_us.is_none());
                    interrupted_seen += 1;
                    running_rows += 1;
                }
            }
        }
        // The operation started after the last line: absent, or a running row committed
        // just before the kill (never completed: it never closed).
        if let Some(r) = row(next) {
            assert_eq!(r.state.status, Status::Cancelled, "round {round} op{next}");
            assert!(r.interrupted);
            running_rows += 1;
        }
        assert!(
            rows.len() <= last.len() + 1,
            "round {round}: rows the child never ran: {rows:?}"
        );
        eprintln!(
            "round {round}: killed after {delay:?}, {} operations acknowledged, last {:?}",
            last.values().filter(|s| **s == "ACK").count(),
            last.iter().next_back()
        );
    }
    // The kills after a random delay mostly land after a few operations (each ~140 ms);
    // those of odd rounds inside an operation's work.
    assert!(acked_total >= 5, "{acked_total}");
    assert!(
        interrupted_seen >= 2,
        "kills inside operations left no interrupted row"
    );
    // The next writer flags the running rows of dead processes: all of them.
    let (_sub, _store) = build(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM operations WHERE status = 'running' AND interrupted = 0"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM operations WHERE interrupted = 1"),
        running_rows
    );
}

/// Figures for the notes: finished operations written per second (run with `--nocapture`).
#[test]
fn throughput() {
    for (nodes, ops) in [(10usize, 2_000usize), (1_000, 100)] {
        let dir = temp_dir("speed");
        let path = dir.join("history.db");
        let (sub, store) = build(&path);
        let start = Instant::now();
        tracing::subscriber::with_default(sub, || {
            for i in 0..ops {
                operation(&format!("op-{i}"), nodes - 1, false);
            }
        });
        let produced = start.elapsed();
        assert!(store.flush_history(Duration::from_secs(120)));
        let total = start.elapsed();
        let stats = store.stats();
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(path.with_extension("db-wal"))
                .map(|m| m.len())
                .unwrap_or(0);
        println!(
            "sqlite history: {nodes} nodes/op: {ops} ops produced in {produced:?}, all written \
             after {total:?} = {:.0} finished ops/s end to end; rows written {}, dropped {}; \
             file+wal {} KiB",
            ops as f64 / total.as_secs_f64(),
            stats.history_file_written,
            stats.history_file_dropped,
            bytes / 1024
        );
        assert_eq!(stats.history_file_errors, 0);
    }
}

/// Runs the command-line client; its stdout (it must succeed).
#[cfg(feature = "cli")]
fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracing-progress"))
        .args(args)
        .env_remove("TRACING_PROGRESS_ADDR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The second run's first operation has an ETA from the first run's durations.
#[test]
fn priors_come_from_the_file() {
    let dir = temp_dir("priors");
    let path = dir.join("history.db");
    let slow = || {
        let root = tracing::info_span!("job", progress.level = "job", progress.name = "nightly");
        let _g = root.enter();
        std::thread::sleep(Duration::from_millis(30));
    };
    let (sub, first) = build(&path);
    tracing::subscriber::with_default(sub, || {
        for _ in 0..5 {
            slow();
        }
    });
    assert!(first.flush_history(Duration::from_secs(10)));
    drop(first);

    let running_estimate = |path: &Path| {
        let (sub, store) = build(path);
        tracing::subscriber::with_default(sub, || {
            let root =
                tracing::info_span!("job", progress.level = "job", progress.name = "nightly");
            let _g = root.enter();
            std::thread::sleep(Duration::from_millis(2));
            store.tick_estimates();
            store.active()[0].root.estimate().cloned()
        })
    };
    let estimate = running_estimate(&path).expect("an ETA from the file's durations");
    assert_eq!(estimate.basis, tracing_progress::EstimateBasis::History);
    assert!(estimate.remaining_us > 10_000, "{estimate:?}");
    // A new file gives no head start.
    assert!(running_estimate(&dir.join("fresh.db")).is_none());
}

#[test]
fn retention_bounds_the_file() {
    let dir = temp_dir("retention");
    let path = dir.join("history.db");
    let build_kept = |rows: Option<u64>, age: Option<Duration>| {
        let (layer, store) = Builder::new()
            .history_file(&path)
            .history_file_retention(rows, age)
            .estimate_interval(None)
            .build()
            .unwrap();
        (tracing_subscriber::registry().with(layer), store)
    };
    let (sub, first) = build_kept(Some(3), None);
    tracing::subscriber::with_default(sub, || {
        for i in 0..6 {
            operation(&format!("op-{i}"), 1, false);
        }
    });
    assert!(first.flush_history(Duration::from_secs(10)));
    drop(first);
    // Pruned when the next store opens the file: the newest three stay.
    let (_sub, _second) = build_kept(Some(3), None);
    let rows = HistoryFile::open(&path)
        .unwrap()
        .query(&HistoryQuery::new())
        .unwrap();
    let names: Vec<_> = rows.iter().map(|r| r.state.name.to_string()).collect();
    assert_eq!(names, ["op-5", "op-4", "op-3"]);
    std::thread::sleep(Duration::from_millis(5));
    let (_sub, _third) = build_kept(None, Some(Duration::from_millis(1)));
    let file = HistoryFile::open(&path).unwrap();
    assert!(file.query(&HistoryQuery::new()).unwrap().is_empty());

    let msg = Builder::new()
        .history_file_retention(Some(1), None)
        .build::<tracing_subscriber::Registry>()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("history_file first"), "{msg}");
}

/// Retention by bytes: under a steady stream of operations the file stops growing at about
/// the bound, the oldest operations go first, a running one stays.
#[test]
fn retention_by_bytes_stops_the_file_growing() {
    let dir = temp_dir("retention-bytes");
    let path = dir.join("history.db");
    const BOUND: u64 = 512 * 1024;
    let (layer, store) = Builder::new()
        .history_file(&path)
        .history_file_retain_bytes(BOUND)
        .estimate_interval(None)
        .build()
        .unwrap();
    let sub = tracing_subscriber::registry().with(layer);
    // What the file holds: the pages of the database as its writer sees them (WAL
    // included), and the main file on disk after a checkpoint.
    let reader = rusqlite::Connection::open(&path).unwrap();
    let logical = || -> u64 {
        let count: i64 = reader
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let size: i64 = reader
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (count * size) as u64
    };
    let mut sizes = Vec::new();
    tracing::subscriber::with_default(sub, || {
        // Running throughout: its row is never pruned.
        let long = tracing::info_span!("job", progress.level = "job", progress.name = "long");
        // Entered once (its start noted), open throughout, not the others' parent.
        long.in_scope(|| std::thread::sleep(Duration::from_millis(120)));
        for round in 0..20 {
            for i in 0..100 {
                operation(&format!("op-{round}-{i}"), 20, false);
            }
            assert!(store.flush_history(Duration::from_secs(30)));
            sizes.push(logical());
        }
        // A burst with no flush: the writer's batches (up to 256 operations, more than the
        // bound) go in chunks.
        for i in 0..1_000 {
            operation(&format!("burst-{i}"), 20, false);
        }
        assert!(store.flush_history(Duration::from_secs(60)));
        sizes.push(logical());
        let long: String = reader
            .query_row(
                "SELECT status FROM operations WHERE name = 'long'",
                [],
                |r| r.get(0),
            )
            .expect("the running row was pruned");
        assert_eq!(long, "running");
    });
    let stats = store.stats();
    assert_eq!(stats.history_file_errors, 0);
    assert_eq!(stats.history_file_dropped, 0);
    assert!(stats.history_file_written >= 3_000, "{stats:?}");
    // The WAL beside it, checkpointed by the writer at a quarter of the bound.
    let wal = std::fs::metadata(dir.join("history.db-wal")).map_or(0, |m| m.len());
    assert!(wal <= BOUND / 2, "the WAL file: {wal} bytes");
    let _: String = reader
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get(1).map(|b: i64| b.to_string())
        })
        .unwrap();
    let on_disk = std::fs::metadata(&path).unwrap().len();
    eprintln!("bytes retention: sizes {sizes:?}, on disk {on_disk}");
    // 2,000 operations of 21 nodes take several times the bound without retention.
    let json: i64 = reader
        .query_row("SELECT sum(length(state_json)) FROM operations", [], |r| {
            r.get(0)
        })
        .unwrap();
    let kept: i64 = reader
        .query_row("SELECT count(*) FROM operations", [], |r| r.get(0))
        .unwrap();
    assert!(
        kept < 2_000 / 2,
        "pruned: {kept} rows left ({json} bytes of JSON)"
    );
    // Stops growing: within the bound plus a batch's worth (the writer prunes after each
    // batch), and no bigger at the end than halfway through.
    let slack = BOUND / 4;
    for s in &sizes {
        assert!(*s <= BOUND + slack, "{s} > {BOUND} + {slack}: {sizes:?}");
    }
    assert!(on_disk <= BOUND + slack, "{on_disk}");
    assert!(
        sizes[sizes.len() - 1] <= sizes[9] + slack / 2,
        "still growing: {sizes:?}"
    );
    let file = HistoryFile::open(&path).unwrap();
    let rows = file.query(&HistoryQuery::new()).unwrap();
    // The newest kept, the oldest gone.
    assert!(rows.iter().any(|r| &*r.state.name == "burst-999"));
    assert!(rows.iter().all(|r| &*r.state.name != "op-0-0"));
    let check: String = reader
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    let msg = Builder::new()
        .history_file_retain_bytes(1)
        .build::<tracing_subscriber::Registry>()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("history_file first"), "{msg}");
}

#[test]
fn a_failing_file_leaves_memory_working() {
    let dir = temp_dir("failing");
    let path = dir.join("history.db");
    let (sub, store) = build(&path);
    // Someone breaks the file under the writer.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("ALTER TABLE operations RENAME TO gone;")
        .unwrap();
    tracing::subscriber::with_default(sub, || operation("kept", 1, false));
    assert!(store.flush_history(Duration::from_secs(10)));
    let stats = store.stats();
    assert!(stats.history_file_errors >= 1, "{stats:?}");
    assert!(stats.has_warning(tracing_progress::sqlite::WRITE_WARNING));
    let history = store.history(&HistoryQuery::new());
    assert_eq!(history.len(), 1);
    assert_eq!(&*history[0].name, "kept");
    assert!(
        store
            .stats()
            .has_warning(tracing_progress::sqlite::READ_WARNING)
    );
}

/// The child side of `two_processes_write_one_file_at_once` (does nothing otherwise): waits
/// for the go file, writes its operations, then waits until it sees the other's.
#[test]
fn child_concurrent_writer() {
    let Ok(path) = std::env::var("TP_SQLITE_CONCURRENT_DB") else {
        return;
    };
    let name = std::env::var("TP_SQLITE_NAME").unwrap();
    let ops: usize = std::env::var("TP_SQLITE_OPS").unwrap().parse().unwrap();
    let go = PathBuf::from(format!("{path}.go"));
    let (sub, store) = build(Path::new(&path));
    println!("WAITING");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !go.exists() {
        assert!(Instant::now() < deadline, "no go");
        std::thread::sleep(Duration::from_millis(1));
    }
    tracing::subscriber::with_default(sub, || {
        for i in 0..ops {
            operation(&format!("{name}-{i}"), 4, i % 7 == 0);
        }
    });
    assert!(store.flush_history(Duration::from_secs(30)));
    // The other process's runs show up in this one's history.
    let others = loop {
        let others = store
            .history(&HistoryQuery::new())
            .iter()
            .filter(|s| s.run.is_some())
            .count();
        if others >= ops || Instant::now() > deadline {
            break others;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stats = store.stats();
    println!(
        "SAW {others} WRITTEN {} DROPPED {} ERRORS {}",
        stats.history_file_written, stats.history_file_dropped, stats.history_file_errors
    );
}

/// Runs `child_concurrent_writer` in a new process.
fn concurrent_child(path: &Path, name: &str, ops: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_concurrent_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TP_SQLITE_CONCURRENT_DB", path)
        .env("TP_SQLITE_NAME", name)
        .env("TP_SQLITE_OPS", ops.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The next line of a child's stdout containing `marker`, from the marker on.
fn line_with(lines: &mut impl Iterator<Item = std::io::Result<String>>, marker: &str) -> String {
    for line in lines {
        let line = line.unwrap();
        if let Some(i) = line.find(marker) {
            return line[i..].to_string();
        }
    }
    panic!("the child ended before printing {marker}");
}

#[test]
fn two_processes_write_one_file_at_once() {
    const OPS: usize = 300;
    let dir = temp_dir("concurrent");
    let path = dir.join("history.db");
    // One store creates the file first (as the first of several processes would).
    drop(build(&path));
    let mut children: Vec<_> = ["left", "right"]
        .iter()
        .map(|name| {
            let mut child = concurrent_child(&path, name, OPS);
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            line_with(&mut lines, "WAITING");
            (child, lines)
        })
        .collect();
    std::fs::write(format!("{}.go", path.display()), b"").unwrap();
    for (child, lines) in &mut children {
        let report = line_with(lines, "SAW ");
        let n: Vec<u64> = report
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(
            n[0], OPS as u64,
            "each sees the other's operations: {report}"
        );
        assert!(n[1] >= OPS as u64, "{report}");
        assert_eq!((n[2], n[3]), (0, 0), "nothing dropped or failed: {report}");
        assert!(child.wait().unwrap().success());
    }

    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // The two wrote at the same time: their rows' times interleave.
    let spans: Vec<(i64, i64)> = conn
        .prepare("SELECT min(finished_us), max(finished_us) FROM operations GROUP BY run_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(spans.len(), 2);
    assert!(
        spans[0].0 < spans[1].1 && spans[1].0 < spans[0].1,
        "the writes overlapped in time: {spans:?}"
    );
    drop(conn);

    // A third run reads both. Both children counted ids from 1, so ids repeat: each
    // operation is named by (run, id).
    let (_sub, store) = build(&path);
    let all = store.history(&HistoryQuery::new());
    assert_eq!(all.len(), 2 * OPS);
    let left = all.iter().find(|s| &*s.name == "left-0").unwrap();
    let right = all.iter().find(|s| &*s.name == "right-0").unwrap();
    assert_eq!(left.id, right.id, "same per-process id in both runs");
    assert_ne!(left.run, right.run);
    assert_eq!(
        store.get_ref(left.reference()).unwrap().name,
        left.name,
        "{}",
        left.reference()
    );
    assert_eq!(&*store.get_ref(right.reference()).unwrap().name, "right-0");
    // A bare id is this store's own operation: this run has none.
    assert!(store.get(left.id).is_none());
    assert!(store.run_id().is_some_and(|r| Some(r) != left.run));
    let failed = store.history(&HistoryQuery::new().status(Status::Failed));
    assert_eq!(failed.len(), 2 * OPS.div_ceil(7));

    // Export reads the file a page at a time (300 per run is more than one page), oldest
    // first, every operation once.
    let mut out = Vec::new();
    let n = store
        .write_history_jsonl(&HistoryQuery::new(), &mut out)
        .unwrap();
    assert_eq!(n, 2 * OPS);
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let times: Vec<u64> = lines
        .iter()
        .map(|v| v["completed_at_us"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let refs: std::collections::HashSet<String> = lines
        .iter()
        .map(|v| format!("{}@{}", v["id"], v["run"].as_str().unwrap()))
        .collect();
    assert_eq!(refs.len(), 2 * OPS, "no operation twice");
    let all_json: serde_json::Value = serde_json::from_str(&store.export_all_json()).unwrap();
    let history = all_json["history"].as_array().unwrap();
    assert_eq!(history.len(), 2 * OPS);
    assert_eq!(history[0]["completed_at_us"], *times.last().unwrap());

    #[cfg(feature = "cli")]
    {
        let db = path.to_str().unwrap();
        let left_ref = left.reference().to_string();
        let out = cli(&["show", &left_ref, "--db", db]);
        assert!(out.contains("left-0") && !out.contains("right-0"), "{out}");
        let out = cli(&["show", &right.id.to_string(), "--db", db]);
        assert!(out.contains("2 runs have an operation"), "{out}");
        let out = cli(&["export", "--db", db]);
        assert_eq!(
            out.lines().count(),
            2 * OPS,
            "export --db writes everything"
        );
        let out = cli(&[
            "export", "--db", db, "--format", "json", "--status", "failed",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2 * OPS.div_ceil(7));
        let out = cli(&["export", "--db", db, "--limit", "3"]);
        let names: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].to_string())
            .collect();
        assert_eq!(names.len(), 3);
    }

    // Over HTTP: the list carries each operation's run, and the single-operation route
    // answers `ID@RUN` from the file.
    #[cfg(all(feature = "http", feature = "cli"))]
    {
        let server = tracing_progress::http::Server::builder(store.clone())
            .bind(([127, 0, 0, 1], 0))
            .spawn()
            .unwrap();
        let addr = server.local_addr().to_string();
        let remote = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_tracing-progress"))
                .args(args)
                .env("TRACING_PROGRESS_ADDR", &addr)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let out = remote(&["--json", "show", &right.reference().to_string()]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["name"], "right-0");
        assert_eq!(v["run"], right.run.unwrap().to_string());
        let out = remote(&["--json", "history", "--name=-0", "--limit", "10000"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let names: Vec<&str> = v["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"left-0") && names.contains(&"right-0"));
        let out = remote(&["export", "--status", "failed"]);
        assert_eq!(out.lines().count(), 2 * OPS.div_ceil(7));
        let text = remote(&["history", "--name", "left-0"]);
        assert!(text.contains(&left.reference().to_string()), "{text}");
    }
}

/// A file written by the previous schema (version 1: `tests/fixtures/history-v1.db`, five
/// completed operations and one interrupted) is read as it is and migrated when opened for
/// writing.
#[test]
fn a_previous_schema_file_is_migrated() {
    let dir = temp_dir("migrate");
    let path = dir.join("history.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/history-v1.db"),
        &path,
    )
    .unwrap();
    // Read-only: no migration, everything readable.
    let old = HistoryFile::open(&path).unwrap();
    assert_eq!(old.schema_version(), 1);
    assert_eq!(old.query(&HistoryQuery::new()).unwrap().len(), 6);
    drop(old);

    let (sub, store) = build(&path);
    let file = HistoryFile::open(&path).unwrap();
    assert_eq!(
        file.schema_version(),
        tracing_progress::sqlite::FILE_SCHEMA_VERSION
    );
    assert_eq!(tracing_progress::sqlite::FILE_SCHEMA_VERSION, 2);
    let index: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'operations_op'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 1, "version 2's index");
    let table: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'operations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        !table.contains("WITHOUT ROWID") && table.contains("UNIQUE (run_id, op_id)"),
        "version 2's rowid table: {table}"
    );
    // The old rows are all there, the interrupted one still interrupted.
    let history = store.history(&HistoryQuery::new());
    assert_eq!(history.len(), 6);
    let long = history.iter().find(|s| &*s.name == "long").unwrap();
    assert_eq!(long.status, Status::Cancelled);
    assert_eq!(
        long.root.cancel_reason,
        Some(tracing_progress::CancelReason::Interrupted)
    );
    let rows = file.get(long.reference()).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].interrupted);
    assert_eq!(rows[0].host, "fixture-host");
    let done = store.history(&HistoryQuery::new().status(Status::Completed));
    assert_eq!(done.len(), 5);
    assert!(done.iter().all(|s| s.root.children.len() == 2));
    // The migrated file takes new operations.
    tracing::subscriber::with_default(sub, || operation("after-migration", 1, false));
    assert!(store.flush_history(Duration::from_secs(10)));
    assert_eq!(file.query(&HistoryQuery::new()).unwrap().len(), 7);
    assert_eq!(store.stats().history_file_errors, 0);
    // It keeps the page size it was made with (new files get 16 KiB pages).
    let page: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page, 4096);
    // Opening it again does not migrate twice.
    drop(build(&path));
    let versions: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM tracing_progress_schema", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(versions, 2, "one row for version 1, one for the migration");
}

/// A directory the process cannot write in gives a clear error at build.
#[test]
fn a_read_only_directory_fails_at_build() {
    let err = |p: &Path| {
        Builder::new()
            .history_file(p)
            .build::<tracing_subscriber::Registry>()
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // Nobody, root included, creates files in /proc.
    let msg = err(Path::new("/proc/self/history.db"));
    assert!(msg.contains("cannot create"), "{msg}");
    // A directory without write permission (root ignores permissions: checked otherwise).
    let dir = temp_dir("readonly");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = dir.join("probe");
    let root = std::fs::write(&probe, b"").is_ok();
    if !root {
        let msg = err(&dir.join("history.db"));
        assert!(msg.contains("cannot create"), "{msg}");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Another process holding the write lock longer than the busy timeout costs those
/// operations (counted, reported once), never the program's time; writing resumes after.
#[test]
fn a_file_locked_too_long_is_reported_and_survived() {
    let dir = temp_dir("locked");
    let path = dir.join("history.db");
    let (sub, store) = build(&path);
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let dispatch = tracing::Dispatch::new(sub);
    let started = Instant::now();
    tracing::dispatcher::with_default(&dispatch, || operation("while-locked", 3, false));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the instrumented code never waits for the file: {:?}",
        started.elapsed()
    );
    assert!(store.flush_history(Duration::from_secs(30)));
    let stats = store.stats();
    assert!(stats.history_file_errors >= 1, "{stats:?}");
    let warning = write_warning(&stats);
    assert!(warning.message().contains("busy timeout"), "{warning:?}");
    assert_eq!(store.history(&HistoryQuery::new()).len(), 1);
    locker.execute_batch("COMMIT;").unwrap();
    tracing::dispatcher::with_default(&dispatch, || operation("after-unlock", 1, false));
    assert!(store.flush_history(Duration::from_secs(10)));
    let names: Vec<String> = HistoryFile::open(&path)
        .unwrap()
        .query(&HistoryQuery::new())
        .unwrap()
        .iter()
        .map(|r| r.state.name.to_string())
        .collect();
    assert_eq!(names, ["after-unlock"]);
}

/// A full disk (here: the file at `history_file_max_bytes`) is counted and reported once.
#[test]
fn a_full_disk_is_reported_and_survived() {
    let dir = temp_dir("full");
    let path = dir.join("history.db");
    let (layer, store) = Builder::new()
        .history_file(&path)
        .history_file_max_bytes(64 * 1024)
        .estimate_interval(None)
        .build()
        .unwrap();
    let sub = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(sub, || {
        for i in 0..200 {
            operation(&format!("filler-{i}"), 20, false);
        }
    });
    assert!(store.flush_history(Duration::from_secs(30)));
    let stats = store.stats();
    assert!(stats.history_file_errors >= 1, "{stats:?}");
    assert!(stats.history_file_written >= 1, "{stats:?}");
    let warning = write_warning(&stats);
    assert!(warning.message().contains("disk is full"), "{warning:?}");
    assert_eq!(
        stats.warnings.len(),
        1,
        "reported once: {:?}",
        stats.warnings
    );
    // Memory has them all; the file what fitted, intact.
    assert_eq!(store.history(&HistoryQuery::new().limit(1000)).len(), 200);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size <= 64 * 1024, "{size}");
    let check: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// The file deleted under a running program: reported once, counted, memory unaffected.
#[test]
fn a_deleted_file_is_reported_and_survived() {
    let dir = temp_dir("deleted");
    let path = dir.join("history.db");
    let (sub, store) = build(&path);
    let dispatch = tracing::Dispatch::new(sub);
    tracing::dispatcher::with_default(&dispatch, || operation("before", 1, false));
    assert!(store.flush_history(Duration::from_secs(10)));
    assert_eq!(store.stats().history_file_errors, 0);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    tracing::dispatcher::with_default(&dispatch, || {
        operation("after-1", 1, false);
        operation("after-2", 1, false);
    });
    assert!(store.flush_history(Duration::from_secs(10)));
    let stats = store.stats();
    assert!(stats.history_file_errors >= 2, "{stats:?}");
    let warning = write_warning(&stats);
    assert!(warning.message().contains("deleted"), "{warning:?}");
    let names: Vec<String> = store
        .history(&HistoryQuery::new())
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["after-2", "after-1", "before"]);
    // The next start creates a new file.
    drop(build(&path));
    assert!(path.is_file());
}

/// The writer needs no flush to write: it wakes up on its own within its batch interval
/// (records are not announced to it one by one).
#[test]
fn finished_operations_are_written_without_a_flush() {
    let dir = temp_dir("unflushed");
    let path = dir.join("h.db");
    let (sub, store) = build(&path);
    // The dispatcher kept alive: dropping the layer would flush.
    let dispatch = tracing::Dispatch::new(sub);
    tracing::dispatcher::with_default(&dispatch, || operation("quiet", 3, false));
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().history_file_written == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing written in 10 s without a flush"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let file = HistoryFile::open(&path).unwrap();
    let ops = file.query(&HistoryQuery::new()).unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(&*ops[0].state.name, "quiet");
    assert_eq!(ops[0].state.root.children.len(), 3);
}

/// A subscriber whose layer's drop and exit wait up to `exit_flush` for the writer.
fn build_with_exit_flush(path: &Path, exit_flush: Duration) -> (Sub, Store) {
    let (layer, store) = Builder::new()
        .history_file(path)
        .history_file_exit_flush(exit_flush)
        .estimate_interval(None)
        .build()
        .unwrap();
    (tracing_subscriber::registry().with(layer), store)
}

/// Bound of the exit flush in the tests that check it loses nothing: the writer runs at nice
/// 19, and other tests keep both cores busy (500 ms, the default, is not always enough then).
const PATIENT_EXIT: Duration = Duration::from_secs(30);

/// Dropping the layer (here: the end of a `with_default` scope) writes what it queued; no
/// flush needed.
#[test]
fn dropping_the_layer_writes_what_it_queued() {
    let dir = temp_dir("drop-flush");
    let path = dir.join("h.db");
    let (sub, store) = build_with_exit_flush(&path, PATIENT_EXIT);
    tracing::subscriber::with_default(sub, || {
        for i in 0..200 {
            operation(&format!("op-{i}"), 3, false);
        }
    });
    // Counted after the commit: written means in the file.
    assert_eq!(store.stats().history_file_written, 200);
    let rows = HistoryFile::open(&path)
        .unwrap()
        .query(&HistoryQuery::new().limit(1_000))
        .unwrap();
    assert_eq!(rows.len(), 200);
}

/// A writer that cannot write (another process holds the file's write lock) costs the drop
/// of the layer its exit-flush bound, not more; the queued operations are lost (counted as
/// not written), the program goes on.
#[test]
fn a_stuck_writer_costs_the_drop_its_bound_at_most() {
    let dir = temp_dir("drop-stuck");
    let path = dir.join("h.db");
    let bound = Duration::from_millis(300);
    let (sub, store) = build_with_exit_flush(&path, bound);
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let started = Instant::now();
    tracing::subscriber::with_default(sub, || {
        for i in 0..20 {
            operation(&format!("op-{i}"), 3, false);
        }
    });
    let waited = started.elapsed();
    assert!(
        waited >= bound && waited < bound + Duration::from_secs(3),
        "drop waited {waited:?} (bound {bound:?})"
    );
    assert_eq!(store.stats().history_file_written, 0);
    holder.execute_batch("ROLLBACK;").unwrap();
}

/// The child side of `a_program_that_exits_without_a_flush_keeps_its_operations`: a global
/// subscriber (never dropped), operations, and `main` returns with no flush.
#[test]
fn child_exits_unflushed() {
    let Ok(path) = std::env::var("TP_SQLITE_EXIT_DB") else {
        return;
    };
    let (sub, _store) = build_with_exit_flush(Path::new(&path), PATIENT_EXIT);
    tracing::subscriber::set_global_default(sub).unwrap();
    for i in 0..300 {
        operation(&format!("op-{i}"), 3, false);
    }
    println!("QUEUED");
}

/// A program that never flushes and whose layer is never dropped (a global dispatcher) still
/// has its last operations in the file after a normal exit: the `atexit` flush.
#[cfg(unix)]
#[test]
fn a_program_that_exits_without_a_flush_keeps_its_operations() {
    let dir = temp_dir("exit-flush");
    let path = dir.join("h.db");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_exits_unflushed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TP_SQLITE_EXIT_DB", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("QUEUED"),
        "{stdout}"
    );
    let rows = HistoryFile::open(&path)
        .unwrap()
        .query(&HistoryQuery::new().limit(1_000))
        .unwrap();
    assert_eq!(rows.len(), 300, "lost at exit: {}", 300 - rows.len());
}

/// New files get 16 KiB pages (fewer WAL frames per operation); a file bounded below 4 MiB
/// SQLite's 4 KiB (its bound kept to a finer grain).
#[test]
fn new_files_have_16_kib_pages_unless_small() {
    let dir = temp_dir("pages");
    let page = |p: &Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    };
    let big = dir.join("big.db");
    let (sub, store) = build(&big);
    tracing::subscriber::with_default(sub, || operation("one", 3, false));
    assert!(store.flush_history(Duration::from_secs(10)));
    assert_eq!(page(&big), 16 * 1024);
    assert_eq!(
        HistoryFile::open(&big)
            .unwrap()
            .query(&HistoryQuery::new())
            .unwrap()
            .len(),
        1
    );
    type Bound = fn(Builder) -> Builder;
    let bounds: [(&str, Bound); 2] = [
        ("max.db", |b| b.history_file_max_bytes(1 << 20)),
        ("retain.db", |b| b.history_file_retain_bytes(1 << 20)),
    ];
    for (name, bound) in bounds {
        let path = dir.join(name);
        let (_layer, _store) = bound(Builder::new().history_file(&path))
            .build::<tracing_subscriber::Registry>()
            .unwrap();
        assert_eq!(page(&path), 4096, "{name}");
    }
}

/// On Linux the writer thread runs at a lower priority than the program's threads (its nice
/// value is its own; the program's threads keep theirs).
#[cfg(target_os = "linux")]
#[test]
fn the_writer_thread_runs_at_a_lower_priority() {
    // Field 19 of /proc/self/task/TID/stat (after the parenthesised name): the nice value.
    fn nice_of(stat: &str) -> Option<i64> {
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(16)?.parse().ok()
    }
    let threads = || -> Vec<(String, i64)> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                let nice = nice_of(&std::fs::read_to_string(t.join("stat")).ok()?)?;
                Some((comm.trim().to_string(), nice))
            })
            .collect()
    };
    // This thread's (the program's) priority, which the writer's is relative to.
    let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap();
    // The lowest priority (the kernel caps nice values at 19).
    let lowered = (own + 19).min(19);
    let dir = temp_dir("nice");
    let (_sub, _store) = build(&dir.join("h.db"));
    // Thread names are cut to 15 bytes in `comm`: "tracing-progres".
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = threads();
        if seen
            .iter()
            .any(|(comm, nice)| comm.starts_with("tracing-progres") && *nice == lowered)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no writer thread at nice {lowered}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The program's thread kept its priority.
    let now = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    assert_eq!(now, Some(own));
}

/// "Completed with failures" is an outcome of its own in every reader: the store (memory and
/// file), the file read-only, and the CLI offline, whose table says it in words.
#[test]
fn completed_with_failures_is_a_filter_and_a_status_in_words() {
    let dir = temp_dir("outcome");
    let path = dir.join("h.db");
    let (sub, first) = build(&path);
    tracing::subscriber::with_default(sub, || {
        operation("clean", 2, false);
        // A failed step under a root that completes: the root completed with failures.
        let root = tracing::info_span!("job", progress.level = "job", progress.name = "partial");
        root.in_scope(|| {
            tracing::info_span!("step", progress.level = "step").in_scope(|| {
                tracing::Span::current().fail("one file unreadable");
            });
            tracing::info_span!("step", progress.level = "step").in_scope(|| {});
        });
        operation("broken", 1, true);
    });
    assert!(first.flush_history(Duration::from_secs(30)));
    let names = |store: &Store, q: &HistoryQuery| -> Vec<String> {
        store
            .history(q)
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    };
    let partial = HistoryQuery::new()
        .outcome("completed_with_failures")
        .unwrap();
    let clean = HistoryQuery::new()
        .status(Status::Completed)
        .with_failures(false);
    let completed = HistoryQuery::new().outcome("Completed").unwrap();
    assert_eq!(names(&first, &partial), ["partial"]);
    assert_eq!(names(&first, &clean), ["clean"]);
    assert_eq!(names(&first, &completed), ["partial", "clean"]);
    // Another store on the file answers from SQL.
    let (_sub2, second) = build(&path);
    assert_eq!(names(&second, &partial), ["partial"]);
    assert_eq!(names(&second, &clean), ["clean"]);
    assert_eq!(names(&second, &completed), ["partial", "clean"]);
    let file = HistoryFile::open(&path).unwrap();
    let rows = file.query(&partial).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(&*rows[0].state.name, "partial");
    // A bad outcome says what is expected.
    let err = HistoryQuery::new()
        .outcome("partial")
        .unwrap_err()
        .to_string();
    assert!(err.contains("completed_with_failures"), "{err}");

    #[cfg(feature = "cli")]
    {
        let db = path.to_str().unwrap();
        let out = cli(&["history", "--db", db]);
        let row = out.lines().find(|l| l.contains("partial")).unwrap();
        assert!(row.contains("completed with failures"), "{out}");
        let clean_row = out.lines().find(|l| l.contains("clean")).unwrap();
        assert!(!clean_row.contains("with failures"), "{out}");
        let out = cli(&["history", "--status", "completed-with-failures", "--db", db]);
        let rows: Vec<&str> = out.lines().filter(|l| l.contains("job")).collect();
        assert_eq!(rows.len(), 1, "{out}");
        assert!(rows[0].contains("partial"), "{out}");
    }
}
