//! One target's queue: lanes (one per case) in arrival order, the lanes
//! ready to run ordered by priority (the events' severity, `critical`
//! first) and then by age, and the lanes waiting out a backoff.
//!
//! Under overload a critical fire alarm must not queue behind a backlog of
//! `info` notices; the order within a case still holds, because a lane
//! runs one delivery at a time, head first.

use crate::config::DeliveryConfig;
use crate::journal::{now_ms, DeliveryRef, DeliveryUpdate};
use govhub_sdk::Event;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The delay before retry number `attempt` (1-based): `base · 2^(attempt-1)`,
/// capped, then a random factor in [0.5, 1.0] ("equal jitter") so that a
/// department coming back is not hit by every retry at the same instant.
pub fn backoff(config: &DeliveryConfig, attempt: u32) -> Duration {
    let exp = config
        .backoff_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
    let capped = exp.min(config.backoff_cap_ms);
    let jitter = 0.5 + 0.5 * fastrand::f64();
    Duration::from_millis((capped as f64 * jitter) as u64)
}

/// A delivery to make: its journal row, and the event when it is already in
/// memory (after a restart it is read from the journal when needed).
#[derive(Debug, Clone)]
pub struct Job {
    /// The journal's delivery.
    pub delivery: DeliveryRef,
    /// The event, if at hand.
    pub event: Option<Arc<Event>>,
}

/// Deliveries of one case (one `order_key`), oldest first; the head is the
/// next to run.
struct Lane {
    jobs: VecDeque<Job>,
    /// Jobs per priority, so the lane's priority is the highest it holds:
    /// a critical event behind an info one of the same case lifts the
    /// whole case (the info event must go first, to keep the case's
    /// order).
    counts: [u32; LANES],
    /// The ticket of the lane's entry in `ready`, while it has one; an
    /// entry with another ticket is stale.
    ticket: Option<u64>,
}

impl Lane {
    fn priority(&self) -> u8 {
        self.counts.iter().rposition(|&n| n > 0).unwrap_or(0) as u8
    }
}

/// A lane whose head may start: highest priority first, then the oldest
/// head (journal order, which is arrival order).
#[derive(PartialEq, Eq)]
struct Ready {
    priority: u8,
    head: i64,
    ticket: u64,
    key: String,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, Reverse(self.head)).cmp(&(other.priority, Reverse(other.head)))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Priorities: the severity ranks, `info` (or none) to `critical`.
pub const LANES: usize = 4;

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
    /// Lanes whose head may start now.
    ready: BinaryHeap<Ready>,
    /// Lanes whose head waits until a time (unix ms).
    waiting: BinaryHeap<Reverse<(i64, String)>>,
    /// Attempts running.
    running: usize,
    next_ticket: u64,
}

impl State {
    /// Puts lane `key` (which must exist) among the ready ones, replacing
    /// any entry it had.
    fn make_ready(&mut self, key: String) {
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        let Some(head) = lane.jobs.front() else {
            return;
        };
        self.next_ticket += 1;
        lane.ticket = Some(self.next_ticket);
        let entry = Ready {
            priority: lane.priority(),
            head: head.delivery.id,
            ticket: self.next_ticket,
            key,
        };
        self.ready.push(entry);
    }
}

/// One target adapter's queue.
pub struct TargetQueue {
    target: String,
    state: Mutex<State>,
    depth: AtomicUsize,
    lane_depth: [AtomicUsize; LANES],
    notify: Notify,
}

/// Why no job can start now, and until when to wait.
pub enum Wait {
    /// Until woken (a push, a finish).
    Notified,
    /// Until woken or this many ms pass (a backoff ends).
    For(u64),
}

fn lane_of(job: &Job) -> usize {
    (job.delivery.priority as usize).min(LANES - 1)
}

impl TargetQueue {
    /// An empty queue for `target`.
    pub fn new(target: &str) -> TargetQueue {
        TargetQueue {
            target: target.to_string(),
            state: Mutex::new(State::default()),
            depth: AtomicUsize::new(0),
            lane_depth: Default::default(),
            notify: Notify::new(),
        }
    }

    /// The target adapter.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Deliveries not yet final.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// Deliveries not yet final, per priority (`info` first).
    pub fn lane_depths(&self) -> [usize; LANES] {
        std::array::from_fn(|i| self.lane_depth[i].load(Ordering::SeqCst))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half
        // updated in a way later calls can't cope with; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a delivery at the end of its lane.
    pub fn push(&self, job: Job) {
        let mut s = self.lock();
        let key = job.delivery.order_key.clone();
        let not_before = job.delivery.not_before_ms;
        let priority = lane_of(&job);
        let lane = s.lanes.entry(key.clone()).or_insert_with(|| Lane {
            jobs: VecDeque::new(),
            counts: [0; LANES],
            ticket: None,
        });
        let first = lane.jobs.is_empty();
        let lifted = !first && priority > lane.priority() as usize;
        let queued = lane.ticket.is_some();
        lane.counts[priority] += 1;
        lane.jobs.push_back(job);
        if first {
            match not_before {
                Some(t) if t > now_ms() => s.waiting.push(Reverse((t, key))),
                _ => s.make_ready(key),
            }
        } else if lifted && queued {
            // Its entry in `ready` carries the old priority: replace it.
            s.make_ready(key);
        }
        drop(s);
        self.depth.fetch_add(1, Ordering::SeqCst);
        self.lane_depth[priority].fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// The next job to start, if fewer than `concurrency` run and a lane is
    /// ready: the ready lane of highest priority, the oldest among equals;
    /// otherwise how long to wait.
    pub fn next(&self, concurrency: usize) -> Result<Job, Wait> {
        let mut s = self.lock();
        let now = now_ms();
        while let Some(Reverse((t, _))) = s.waiting.peek() {
            if *t > now {
                break;
            }
            if let Some(Reverse((_, key))) = s.waiting.pop() {
                s.make_ready(key);
            }
        }
        if s.running >= concurrency {
            return Err(Wait::Notified);
        }
        while let Some(entry) = s.ready.pop() {
            let Some(lane) = s.lanes.get_mut(&entry.key) else {
                continue;
            };
            if lane.ticket != Some(entry.ticket) {
                continue;
            }
            lane.ticket = None;
            if let Some(job) = lane.jobs.front().cloned() {
                s.running += 1;
                return Ok(job);
            }
        }
        match s.waiting.peek() {
            Some(Reverse((t, _))) => Err(Wait::For((*t - now).max(1) as u64)),
            None => Err(Wait::Notified),
        }
    }

    /// Waits as `next` said.
    pub async fn wait(&self, wait: Wait) {
        match wait {
            Wait::Notified => self.notify.notified().await,
            Wait::For(ms) => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(ms), self.notify.notified()).await;
            }
        }
    }

    /// Wakes the worker (to notice a shutdown).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Moves the lane on after an attempt: a final outcome pops the head
    /// and readies the next; a retry keeps the head, waiting out its backoff.
    pub fn finish(&self, job: Job, update: &DeliveryUpdate) {
        let mut s = self.lock();
        s.running = s.running.saturating_sub(1);
        let key = job.delivery.order_key.clone();
        let done = match update {
            DeliveryUpdate::Retry {
                attempts,
                next_attempt_ms,
                ..
            } => {
                if let Some(head) = s.lanes.get_mut(&key).and_then(|l| l.jobs.front_mut()) {
                    head.delivery.attempts = *attempts;
                    head.delivery.not_before_ms = Some(*next_attempt_ms);
                    head.event = job.event;
                }
                s.waiting.push(Reverse((*next_attempt_ms, key)));
                None
            }
            DeliveryUpdate::Delivered { .. }
            | DeliveryUpdate::Dead { .. }
            | DeliveryUpdate::Withheld { .. } => s.pop_head(key),
        };
        drop(s);
        self.popped(done);
    }

    /// Lets go of a job whose delivery the backend takes back (shared
    /// work: the backend hands a retry out again once its backoff ends):
    /// the lane moves on here as after a final outcome.
    pub fn hand_back(&self, job: Job) {
        let mut s = self.lock();
        s.running = s.running.saturating_sub(1);
        let done = s.pop_head(job.delivery.order_key);
        drop(s);
        self.popped(done);
    }

    fn popped(&self, priority: Option<usize>) {
        if let Some(p) = priority {
            self.depth.fetch_sub(1, Ordering::SeqCst);
            self.lane_depth[p].fetch_sub(1, Ordering::SeqCst);
        }
        self.notify.notify_one();
    }
}

impl State {
    /// Drops lane `key`'s head and readies the next; the priority of the
    /// job dropped.
    fn pop_head(&mut self, key: String) -> Option<usize> {
        let mut done = None;
        let mut now_empty = false;
        if let Some(lane) = self.lanes.get_mut(&key) {
            if let Some(head) = lane.jobs.pop_front() {
                let p = lane_of(&head);
                lane.counts[p] = lane.counts[p].saturating_sub(1);
                done = Some(p);
            }
            now_empty = lane.jobs.is_empty();
        }
        if now_empty {
            self.lanes.remove(&key);
        } else {
            self.make_ready(key);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, key: &str) -> Job {
        Job {
            delivery: DeliveryRef {
                id,
                event_seq: id,
                target: "t".into(),
                order_key: key.into(),
                attempts: 0,
                not_before_ms: None,
                priority: 0,
            },
            event: None,
        }
    }

    fn job_at(id: i64, key: &str, priority: u8) -> Job {
        let mut j = job(id, key);
        j.delivery.priority = priority;
        j
    }

    fn delivered(id: i64) -> DeliveryUpdate {
        DeliveryUpdate::Delivered {
            id,
            attempts: 1,
            reference: None,
            flow: None,
        }
    }

    #[test]
    fn a_case_is_delivered_in_order_and_cases_do_not_wait_for_each_other() {
        let q = TargetQueue::new("t");
        q.push(job(1, "case-a"));
        q.push(job(2, "case-a"));
        q.push(job(3, "case-b"));
        let a1 = q.next(4).ok().unwrap();
        let b1 = q.next(4).ok().unwrap();
        assert_eq!((a1.delivery.id, b1.delivery.id), (1, 3));
        // case-a's second event waits for its first.
        assert!(q.next(4).is_err());
        q.finish(a1, &delivered(1));
        assert_eq!(q.next(4).ok().unwrap().delivery.id, 2);
        assert_eq!(q.depth(), 2);
    }

    #[test]
    fn a_retry_holds_its_lane_until_the_backoff_ends() {
        let q = TargetQueue::new("t");
        q.push(job(1, "c"));
        q.push(job(2, "c"));
        let j = q.next(1).ok().unwrap();
        q.finish(
            j,
            &DeliveryUpdate::Retry {
                id: 1,
                attempts: 1,
                error: "503".into(),
                next_attempt_ms: now_ms() + 60_000,
            },
        );
        match q.next(1) {
            Err(Wait::For(ms)) => assert!(ms > 50_000),
            _ => panic!("the lane must wait"),
        }
        q.finish(job(1, "c"), &delivered(1));
        assert_eq!(q.depth(), 1);
    }

    #[test]
    fn higher_lanes_go_first_and_equals_in_arrival_order() {
        let q = TargetQueue::new("t");
        for i in 1..=5 {
            q.push(job_at(i, &format!("info-{i}"), 0));
        }
        q.push(job_at(6, "major", 2));
        q.push(job_at(7, "critical", 3));
        q.push(job_at(8, "major-2", 2));
        assert_eq!(q.lane_depths(), [5, 0, 2, 1]);
        let order: Vec<i64> = (0..8)
            .map(|_| {
                let j = q.next(100).ok().unwrap();
                j.delivery.id
            })
            .collect();
        assert_eq!(order, [7, 6, 8, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_critical_event_lifts_its_case_but_waits_for_the_events_before_it() {
        let q = TargetQueue::new("t");
        q.push(job_at(1, "other", 2));
        q.push(job_at(2, "case", 0));
        q.push(job_at(3, "case", 3));
        // The case now ranks critical: its info head goes first, before the
        // major event of another case; its critical event only after it.
        let head = q.next(4).ok().unwrap();
        assert_eq!(head.delivery.id, 2);
        assert_eq!(q.next(4).ok().unwrap().delivery.id, 1);
        assert!(
            q.next(4).is_err(),
            "the case's second event waits for its first"
        );
        q.finish(head, &delivered(2));
        assert_eq!(q.next(4).ok().unwrap().delivery.id, 3);
        assert_eq!(q.lane_depths(), [0, 0, 1, 1]);
    }

    #[test]
    fn concurrency_bounds_running_attempts() {
        let q = TargetQueue::new("t");
        for i in 0..3 {
            q.push(job(i, &format!("c{i}")));
        }
        assert!(q.next(2).is_ok());
        assert!(q.next(2).is_ok());
        assert!(matches!(q.next(2), Err(Wait::Notified)));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let c = DeliveryConfig {
            max_attempts: 10,
            backoff_base_ms: 100,
            backoff_cap_ms: 1000,
            ..DeliveryConfig::default()
        };
        for _ in 0..100 {
            let d1 = backoff(&c, 1).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = backoff(&c, 3).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d9 = backoff(&c, 9).as_millis();
            assert!((500..=1000).contains(&d9), "{d9}");
        }
    }
}
