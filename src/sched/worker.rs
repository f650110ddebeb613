//! The workers of a scoring run: each takes batches from a shared queue and scores them
//! through its session ([`JobScorer::score_batch`]), logs every batch in its worker log (what
//! `cryptodl status` sums), and tries the batches another worker held once more at the end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::scoring::{JobScorer, Outcome, ScoreError};
use super::session::Session;
use super::worklog::{Event, WorkerLog};

/// Batches and images scored, by one worker or all of them.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Tally {
    /// Batches scored now.
    pub scored: usize,
    /// Of those, batches whose damaged logits were replaced.
    pub rescored: usize,
    /// Batches already done.
    pub skipped: usize,
    /// Batches another worker was scoring (after a second try).
    pub busy: usize,
    /// Images scored.
    pub images: usize,
    /// Seconds of scoring (summed over workers in a total).
    pub server_s: f64,
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            scored: self.scored + o.scored,
            rescored: self.rescored + o.rescored,
            skipped: self.skipped + o.skipped,
            busy: self.busy + o.busy,
            images: self.images + o.images,
            server_s: self.server_s + o.server_s,
        }
    }
}

/// What one worker did.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Its id (in its log's name).
    pub worker: String,
    /// The backend it scored on.
    pub device: String,
    /// What it scored.
    #[serde(flatten)]
    pub tally: Tally,
}

/// The batches of one run, shared by its workers; the first error stops them all.
pub struct Queue<'a> {
    batches: &'a [usize],
    next: AtomicUsize,
    stop: AtomicBool,
    progress: &'a (dyn Fn() + Sync),
}

impl<'a> Queue<'a> {
    /// A queue of `batches`; `progress` is called once per batch finished (scored, skipped
    /// or left to another worker).
    pub fn new(batches: &'a [usize], progress: &'a (dyn Fn() + Sync)) -> Self {
        Queue {
            batches,
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            progress,
        }
    }
}

/// This machine's name, for worker ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string())
}

/// One worker named `worker` (of shard `shard`): batches from `queue` through `session`
/// until none is left; a batch another worker held is tried once more at the end. Every batch
/// goes into the worker's log in the output directory.
pub fn work(
    scorer: &JobScorer<'_>,
    queue: &Queue<'_>,
    session: &Session,
    worker: String,
    shard: &str,
) -> Result<WorkerReport, ScoreError> {
    let out = scorer.files().out;
    let log = WorkerLog::open(out, &worker, shard, &session.backend_name()).map_err(|error| {
        ScoreError::Log {
            path: out.to_path_buf(),
            error,
        }
    })?;
    let mut report = WorkerReport {
        worker,
        device: session.backend_name(),
        ..Default::default()
    };
    let _ = log.append(&log.record(Event::Start));
    let t0 = Instant::now();
    let mut busy = Vec::new();
    let step = |i: usize, last_try: bool, report: &mut WorkerReport| -> Result<bool, ScoreError> {
        let outcome = scorer.score_batch(session, i).inspect_err(|e| {
            queue.stop.store(true, Ordering::SeqCst);
            let mut r = log.record(Event::Error);
            r.batch = Some(i);
            r.message = Some(e.to_string());
            let _ = log.append(&r);
        })?;
        let mut r = log.record(Event::Skipped);
        r.batch = Some(i);
        match outcome {
            Outcome::Scored {
                images,
                seconds,
                rescored,
            } => {
                report.tally.scored += 1;
                report.tally.rescored += usize::from(rescored);
                report.tally.images += images;
                report.tally.server_s += seconds;
                r.event = if rescored {
                    Event::Rescored
                } else {
                    Event::Scored
                };
                r.images = images;
                r.seconds = seconds;
            }
            Outcome::Done => report.tally.skipped += 1,
            Outcome::Busy if !last_try => return Ok(false),
            Outcome::Busy => {
                report.tally.busy += 1;
                r.event = Event::Busy;
            }
        }
        let _ = log.append(&r);
        (queue.progress)();
        Ok(true)
    };
    while !queue.stop.load(Ordering::SeqCst) {
        let j = queue.next.fetch_add(1, Ordering::SeqCst);
        let Some(&i) = queue.batches.get(j) else {
            break;
        };
        if !step(i, false, &mut report)? {
            busy.push(i);
        }
    }
    for i in busy {
        if queue.stop.load(Ordering::SeqCst) {
            break;
        }
        step(i, true, &mut report)?;
    }
    let mut r = log.record(Event::Finish);
    r.images = report.tally.images;
    r.seconds = t0.elapsed().as_secs_f64();
    let _ = log.append(&r);
    Ok(report)
}
