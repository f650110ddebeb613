//! The JSON-lines log each `score` worker appends to `SCORED/logs/WORKER.jsonl` (one file per
//! worker, so workers on shared storage never interleave), and its summary per worker.
//!
//! One record per line: `{"time": unix seconds, "worker", "event", "shard", "device", "batch",
//! "images", "seconds", "message"}`; `event` is `start`, `scored`, `rescored`, `skipped`
//! (already done), `busy` (another worker held it), `finish` or `error`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The directory of the logs, under a job's output directory.
pub const LOG_DIR: &str = "logs";
/// The largest log file read (64 MiB); the rest of a larger one is not read.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// What a log record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The worker's session is ready (keys uploaded).
    Start,
    /// A batch was scored.
    Scored,
    /// A batch whose logits were damaged was scored again (`--rescore-corrupt`).
    Rescored,
    /// A batch was already done.
    Skipped,
    /// Another worker held a batch's lock.
    Busy,
    /// The worker ran out of batches.
    Finish,
    /// The worker stopped on an error (`message`).
    Error,
}

/// One line of a worker's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The worker's id (host, process, device index).
    pub worker: String,
    /// What happened.
    pub event: Event,
    /// The worker's shard, `K/N`.
    pub shard: String,
    /// The backend it scores on.
    pub device: String,
    /// The batch, for batch events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Images scored (scored / rescored).
    #[serde(default)]
    pub images: usize,
    /// Seconds of scoring (scored / rescored), or of the whole run (finish).
    #[serde(default)]
    pub seconds: f64,
    /// The error, for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A worker's log, opened for appending.
#[derive(Debug)]
pub struct WorkerLog {
    path: PathBuf,
    file: Mutex<File>,
    worker: String,
    shard: String,
    device: String,
}

/// Keeps the characters a file name can hold everywhere (`[A-Za-z0-9._-]`).
pub fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl WorkerLog {
    /// Opens (creating) `out/logs/WORKER.jsonl` for appending.
    pub fn open(out: &Path, worker: &str, shard: &str, device: &str) -> io::Result<Self> {
        let dir = out.join(LOG_DIR);
        crate::io::create_own_dir(&dir)?;
        let path = dir.join(format!("{}.jsonl", file_safe(worker)));
        let file = crate::io::open_no_follow(
            std::fs::OpenOptions::new().create(true).append(true),
            &path,
        )?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file; remove it", path.display()),
            ));
        }
        // A log with another name elsewhere (a hard link planted in the directory) would
        // carry this worker's lines into that file.
        #[cfg(unix)]
        if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} has other hard links; a worker's log is a file of its own: remove it",
                    path.display()
                ),
            ));
        }
        Ok(Self {
            path,
            file: Mutex::new(file),
            worker: worker.to_string(),
            shard: shard.to_string(),
            device: device.to_string(),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A record of this worker, now.
    pub fn record(&self, event: Event) -> LogRecord {
        LogRecord {
            time: now(),
            worker: self.worker.clone(),
            event,
            shard: self.shard.clone(),
            device: self.device.clone(),
            batch: None,
            images: 0,
            seconds: 0.0,
            message: None,
        }
    }

    /// Appends one record as one line, in one write.
    pub fn append(&self, record: &LogRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&line)
    }
}

/// Every record of every worker log under `out` (oldest first per file), and the number of
/// lines that were not records (a line cut by a killed worker, a foreign file).
pub fn read_logs(out: &Path) -> io::Result<(Vec<LogRecord>, usize)> {
    let dir = out.join(LOG_DIR);
    let mut records = Vec::new();
    let mut bad = 0;
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
        // Never `score`'s own: its logs are not read through a link.
        return Ok((records, 1));
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((records, 0)),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        // A link or anything but a regular file is not a worker's log.
        let file = match crate::io::open_no_follow(std::fs::OpenOptions::new().read(true), &path) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
            _ => {
                bad += 1;
                continue;
            }
        };
        let mut text = String::new();
        if file.take(MAX_LOG_BYTES).read_to_string(&mut text).is_err() {
            bad += 1;
            continue;
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<LogRecord>(line) {
                Ok(r) => records.push(r),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((records, bad))
}

/// What one worker did, summed over its log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerSummary {
    /// The worker's id.
    pub worker: String,
    /// Its backend.
    pub device: String,
    /// Its shard.
    pub shard: String,
    /// Batches it scored (rescored ones included).
    pub batches: usize,
    /// Images it scored.
    pub images: usize,
    /// Seconds spent scoring.
    pub scoring_seconds: f64,
    /// Images per second of scoring.
    pub images_per_second: f64,
    /// From its first record to its last.
    pub wall_seconds: f64,
    /// Whether it logged `finish`.
    pub finished: bool,
    /// The last error it logged.
    pub error: Option<String>,
}

/// Sums records per worker, in the order workers first appear.
pub fn summarize(records: &[LogRecord]) -> Vec<WorkerSummary> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, (WorkerSummary, f64, f64)> = BTreeMap::new();
    for r in records {
        let (s, first, last) = by.entry(r.worker.clone()).or_insert_with(|| {
            order.push(r.worker.clone());
            (
                WorkerSummary {
                    worker: r.worker.clone(),
                    device: r.device.clone(),
                    shard: r.shard.clone(),
                    batches: 0,
                    images: 0,
                    scoring_seconds: 0.0,
                    images_per_second: 0.0,
                    wall_seconds: 0.0,
                    finished: false,
                    error: None,
                },
                f64::INFINITY,
                f64::NEG_INFINITY,
            )
        });
        *first = first.min(r.time);
        *last = last.max(r.time);
        match r.event {
            Event::Scored | Event::Rescored => {
                s.batches += 1;
                s.images += r.images;
                s.scoring_seconds += r.seconds;
            }
            Event::Finish => s.finished = true,
            Event::Error => s.error = r.message.clone(),
            Event::Start => {
                // a worker id reused by a later run starts over as unfinished
                s.finished = false;
                s.error = None;
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|w| by.remove(&w))
        .map(|(mut s, first, last)| {
            s.wall_seconds = (last - first).max(0.0);
            if s.scoring_seconds > 0.0 {
                s.images_per_second = s.images as f64 / s.scoring_seconds;
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_round_trip_and_sum_per_worker() {
        let dir = tempfile::tempdir().unwrap();
        let a = WorkerLog::open(dir.path(), "host/1 0", "1/2", "cpu").unwrap();
        let b = WorkerLog::open(dir.path(), "host-2-0", "2/2", "gpu").unwrap();
        assert!(a.path().ends_with("logs/host_1_0.jsonl"));
        a.append(&a.record(Event::Start)).unwrap();
        for (log, batch, images) in [(&a, 0, 10), (&b, 1, 20), (&a, 2, 5)] {
            let mut r = log.record(Event::Scored);
            r.batch = Some(batch);
            r.images = images;
            r.seconds = 0.5;
            log.append(&r).unwrap();
        }
        a.append(&a.record(Event::Finish)).unwrap();
        let mut e = b.record(Event::Error);
        e.message = Some("disk full".into());
        b.append(&e).unwrap();
        // a line cut by a killed worker
        std::fs::OpenOptions::new()
            .append(true)
            .open(b.path())
            .unwrap()
            .write_all(b"{\"time\": 1.0, \"work")
            .unwrap();
        let (records, bad) = read_logs(dir.path()).unwrap();
        assert_eq!((records.len(), bad), (6, 1));
        let s = summarize(&records);
        let a = s.iter().find(|s| s.worker == "host/1 0").unwrap();
        assert_eq!((a.batches, a.images, a.finished), (2, 15, true));
        assert!((a.images_per_second - 15.0).abs() < 1e-9);
        let b = s.iter().find(|s| s.worker == "host-2-0").unwrap();
        assert_eq!((b.batches, b.finished), (1, false));
        assert_eq!(b.error.as_deref(), Some("disk full"));
    }
}

#[cfg(all(test, unix))]
mod link_tests {
    use super::*;

    /// A log planted as a symbolic or hard link to a file outside the output directory is
    /// refused, and the file is left as it was.
    #[test]
    fn a_planted_log_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"VICTIM\n").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join(LOG_DIR)).unwrap();
        std::fs::hard_link(&victim, out.join(LOG_DIR).join("w-1-0.jsonl")).unwrap();
        let e = WorkerLog::open(&out, "w-1-0", "1/1", "cpu").unwrap_err();
        assert!(e.to_string().contains("other hard links"), "{e}");
        std::os::unix::fs::symlink(&victim, out.join(LOG_DIR).join("w-2-0.jsonl")).unwrap();
        let e = WorkerLog::open(&out, "w-2-0", "1/1", "cpu").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"VICTIM\n");
    }
}
