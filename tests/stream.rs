//! `GET /v1/stream` without a browser: resuming with `Last-Event-ID` and
//! `?after=` without a gap or a duplicate, `resync` for a cursor the hub
//! no longer keeps, filters, limits, a subscriber that never reads, and
//! SIGTERM with streams open.

mod support;

use std::time::{Duration, Instant};
use support::sse::SseClient;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn alert(id: &str, grid: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:stream",
        "type": "gov.alert.issued",
        "severity": "minor",
        "grid": grid,
        "data": { "text": "台风“烟花”预警" },
    })
}

/// Sends `ids` as alerts in `grid`, a hundred to a batch.
fn send_alerts(hub: &HubProcess, ids: &[String], grid: &str) {
    for chunk in ids.chunks(100) {
        let events: Vec<_> = chunk.iter().map(|id| alert(id, grid)).collect();
        let (status, _, body) = send_batch(&hub.base, &events);
        assert_eq!(status, 202, "{body}");
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The event ids in stream items, in order.
fn event_ids(items: &[support::sse::SseEvent]) -> Vec<String> {
    items
        .iter()
        .map(|e| e.json()["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Reads 1,000 events over two connections, broken after 400, resuming
/// with `resume(last id seen)`, and checks every event came once, in order.
fn resume_without_gap_or_duplicate(resume: impl Fn(&HubProcess, &str) -> SseClient) {
    let dir = HubDir::new(&[], "");
    let hub = dir.start();
    let mut first = SseClient::open(&hub.base, "/v1/stream?kind=event", None);
    assert_eq!(first.status, 200, "{}", first.body);
    let all = ids("r", 1_000);
    let sender = {
        let (base, all) = (hub.base.clone(), all.clone());
        std::thread::spawn(move || {
            for chunk in all.chunks(50) {
                let events: Vec<_> = chunk
                    .iter()
                    .map(|id| alert(id, "yingfeng/yingyi/2"))
                    .collect();
                let (status, _, body) = send_batch(&base, &events);
                assert_eq!(status, 202, "{body}");
            }
        })
    };
    let before = first.take("event", 400, WAIT);
    let last = before.last().unwrap().id.clone().unwrap();
    drop(first);
    // Events keep arriving while nobody listens.
    let mut second = resume(&hub, &last);
    assert_eq!(second.status, 200, "{}", second.body);
    let after = second.take("event", 600, WAIT);
    sender.join().unwrap();
    let mut got = event_ids(&before);
    got.extend(event_ids(&after));
    assert_eq!(got, all, "every event once, in order");
    let cursors: Vec<i64> = before.iter().chain(&after).map(|e| e.cursor()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursors only grow");
    assert!(
        second.next(Duration::from_millis(300)).is_none(),
        "nothing more: no duplicate at the end"
    );
}

#[test]
fn resuming_with_last_event_id_loses_and_repeats_nothing() {
    resume_without_gap_or_duplicate(|hub, last| {
        SseClient::open(&hub.base, "/v1/stream?kind=event", Some(last))
    });
}

#[test]
fn resuming_with_after_loses_and_repeats_nothing() {
    resume_without_gap_or_duplicate(|hub, last| {
        SseClient::open(
            &hub.base,
            &format!("/v1/stream?kind=event&after={last}"),
            None,
        )
    });
}

#[test]
fn a_cursor_older_than_the_hub_keeps_gets_resync_then_the_live_stream() {
    let dir = HubDir::new(&[], "[stream]\nretain = 100\n");
    let hub = dir.start();
    send_alerts(&hub, &ids("old", 2_500), "yingfeng");
    let mut s = SseClient::open(&hub.base, "/v1/stream?after=1", None);
    assert_eq!(s.status, 200);
    let resync = s.next(WAIT).expect("an answer to a stale cursor");
    assert_eq!(resync.event, "resync", "{resync:?}");
    let head = resync.json()["cursor"].as_i64().unwrap();
    assert_eq!(resync.cursor(), head);
    assert!(head >= 2_500, "{resync:?}");
    // Then it follows on from there.
    send_alerts(&hub, &["new-0".to_string()], "yingfeng");
    let next = s.take("event", 1, WAIT).remove(0);
    assert_eq!(next.json()["id"], "new-0");
    assert!(next.cursor() > head);
    // A cursor from the future is stale too.
    let mut s = SseClient::open(&hub.base, "/v1/stream?after=99999999", None);
    assert_eq!(s.next(WAIT).unwrap().event, "resync");
}

#[test]
fn filters_limits_keepalives_and_bad_parameters() {
    let dir = HubDir::new(&[], "[stream]\nmax_subscribers = 3\nkeepalive_ms = 200\n");
    let hub = dir.start();
    let mut yingyi = SseClient::open(
        &hub.base,
        "/v1/stream?grid=yingfeng/yingyi&kind=event",
        None,
    );
    let mut critical = SseClient::open(&hub.base, "/v1/stream?severity=critical", None);
    let mut third = SseClient::open(&hub.base, "/v1/stream", None);
    assert_eq!(
        (yingyi.status, critical.status, third.status),
        (200, 200, 200)
    );
    let refused = SseClient::open(&hub.base, "/v1/stream", None);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("stream.max_subscribers"),
        "{}",
        refused.body
    );
    send_alerts(&hub, &["in-yingyi".to_string()], "yingfeng/yingyi/2");
    send_alerts(&hub, &["in-yinger".to_string()], "yingfeng/yinger/1");
    let got = yingyi.take("event", 1, WAIT);
    assert_eq!(event_ids(&got), ["in-yingyi"]);
    assert!(
        yingyi.next(Duration::from_millis(500)).is_none(),
        "the other grid's event passed the filter"
    );
    assert!(
        critical.next(Duration::from_millis(300)).is_none(),
        "minor passed severity=critical"
    );
    assert_eq!(
        event_ids(&third.take("event", 2, WAIT)),
        ["in-yingyi", "in-yinger"]
    );
    // A quiet stream gets a keep-alive comment.
    let started = Instant::now();
    loop {
        let b = third
            .next_block(Duration::from_secs(2))
            .expect("a keep-alive");
        if b.comment {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // A closed stream frees its place.
    drop(critical);
    let again = support::eventually(Duration::from_secs(10), || {
        let s = SseClient::open(&hub.base, "/v1/stream", None);
        match s.status {
            200 => Ok(s),
            other => Err(format!("still refused: {other}")),
        }
    });
    drop(again);
    for (query, field) in [
        ("severity=urgent", "severity"),
        ("gird=x", "gird"),
        ("after=abc", "after"),
        ("after=-5", "after"),
        ("kind=events", "kind"),
    ] {
        let (status, body) = get(&hub.url(&format!("/v1/stream?{query}")));
        assert_eq!(status, 400, "{query}: {body}");
        let p: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(p["field"], field, "{body}");
    }
}

#[test]
fn a_quiet_stream_is_written_at_once_and_a_busy_one_once_an_interval() {
    let dir = HubDir::new(&[], "[stream]\ncoalesce_ms = 800\n");
    let hub = dir.start();
    let mut s = SseClient::open(&hub.base, "/v1/stream?kind=event", None);
    assert_eq!(s.status, 200, "{}", s.body);
    // Quiet for longer than the interval: the next event goes at once.
    assert!(s.next(Duration::from_millis(900)).is_none());
    let sent = Instant::now();
    send_alerts(&hub, &["quiet".to_string()], "yingfeng/yingyi/2");
    assert_eq!(event_ids(&s.take("event", 1, WAIT)), ["quiet"]);
    let first = sent.elapsed();
    assert!(
        first < Duration::from_millis(600),
        "a quiet stream waited {first:?}"
    );
    // Busy now: the next one waits out the interval since the last look.
    let seen = Instant::now();
    send_alerts(&hub, &["busy".to_string()], "yingfeng/yingyi/2");
    assert_eq!(event_ids(&s.take("event", 1, WAIT)), ["busy"]);
    let second = seen.elapsed();
    assert!(
        second >= Duration::from_millis(500),
        "a busy stream was written again after {second:?} (stream.coalesce_ms = 800)"
    );
}

#[test]
fn a_filtered_stream_is_told_its_place_even_when_nothing_passes() {
    let dir = HubDir::new(&[], "[stream]\nkeepalive_ms = 200\n");
    let hub = dir.start();
    let head = |hub: &HubProcess| {
        hub.get_json("/v1/cockpit/snapshot").1["cursor"]
            .as_i64()
            .unwrap()
    };
    send_alerts(&hub, &ids("before", 3), "yingfeng/yinger/1");
    let at_open = head(&hub);
    let path = "/v1/stream?grid=yingfeng/yingyi&kind=event";
    let mut s = SseClient::open(&hub.base, path, None);
    // A place to resume from at once, before anything passed the filter.
    let place = |s: &mut SseClient, want: i64| {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("never told cursor {want}"));
            let b = s.next_block(left).expect("the stream ended");
            if b.id.is_some() {
                assert!(b.data.is_empty(), "an item passed the filter: {b:?}");
                if b.cursor() == want {
                    return;
                }
            }
        }
    };
    place(&mut s, at_open);
    // Events elsewhere: the keep-alive moves the place past them.
    send_alerts(&hub, &ids("elsewhere", 5), "yingfeng/yinger/1");
    let moved = head(&hub);
    assert_eq!(moved, at_open + 5);
    place(&mut s, moved);
    drop(s);
    send_alerts(&hub, &["in-yingyi".to_string()], "yingfeng/yingyi/2");
    let mut again = SseClient::open(&hub.base, path, Some(&moved.to_string()));
    assert_eq!(event_ids(&again.take("event", 1, WAIT)), ["in-yingyi"]);
}

/// The hub's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn subscribers_that_never_read_do_not_grow_the_hubs_memory_nor_hold_up_sigterm() {
    let dir = HubDir::new(&[], "[stream]\nbuffer = 64\n");
    let mut hub = dir.start_with_env(&[("GOVHUB__SERVER__SHUTDOWN_GRACE_MS", "2000")]);
    // Warm the journal and the allocator first.
    send_alerts(&hub, &ids("warm", 5_000), "yingfeng");
    // Twenty subscribers that ask and then never read a byte.
    let stalled: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            use std::io::Write;
            let mut s =
                std::net::TcpStream::connect(hub.base.trim_start_matches("http://")).unwrap();
            s.write_all(
                b"GET /v1/stream HTTP/1.1\r\nhost: hub\r\naccept: text/event-stream\r\n\r\n",
            )
            .unwrap();
            s
        })
        .collect();
    support::eventually(WAIT, || {
        let open = hub.metric("govhub_stream_subscribers", &[]);
        match open >= 20.0 {
            true => Ok(()),
            false => Err(format!("{open} of 20 streams open")),
        }
    });
    // Events of ~1 KB. A stalled subscriber's socket, the HTTP server's
    // write buffer and its own queue fill up with the first of them; after
    // that it holds nothing more, however many follow.
    let send_big = |prefix: &str, n: usize| {
        for chunk in ids(prefix, n).chunks(100) {
            let events: Vec<_> = chunk
                .iter()
                .map(|id| {
                    let mut e = alert(id, "yingfeng");
                    e["data"]["text"] = "x".repeat(1000).into();
                    e
                })
                .collect();
            let (status, _, body) = send_batch(&hub.base, &events);
            assert_eq!(status, 202, "{body}");
        }
    };
    let start = rss_kib(hub.child.id());
    send_big("fill", 10_000);
    let filled = rss_kib(hub.child.id());
    send_big("more", 20_000);
    let after = rss_kib(hub.child.id());
    let per_subscriber_mib = filled.saturating_sub(start) as f64 / 1024.0 / 20.0;
    let backlog_mib = after.saturating_sub(filled) / 1024;
    eprintln!(
        "stalled subscribers: {per_subscriber_mib:.1} MiB each once full; then 20 MB more events grew the hub by {backlog_mib} MiB"
    );
    // Its socket's and the HTTP server's buffers, its queue, and the
    // threads that read the journal for it (measured 2.4-3.5 MiB here with
    // 20; 0.96 MiB each with 100 in BENCHMARKS.md 5b).
    assert!(
        per_subscriber_mib < 6.0,
        "a stalled subscriber holds {per_subscriber_mib:.1} MiB"
    );
    // Buffering what the stalled subscribers missed would be 20 × 20 MB.
    assert!(
        backlog_mib < 32,
        "20 MB more events grew the hub by {backlog_mib} MiB with 20 stalled subscribers"
    );
    // The hub still serves.
    let mut fresh = SseClient::open(&hub.base, "/v1/stream?kind=event", None);
    send_alerts(&hub, &["after-stall".to_string()], "yingfeng");
    assert_eq!(event_ids(&fresh.take("event", 1, WAIT)), ["after-stall"]);
    // Their sockets are full and they still hold them open: SIGTERM may
    // not wait for them past the grace.
    let took = hub.terminate(Duration::from_secs(20));
    assert!(
        took < Duration::from_millis(2000 + 1500),
        "SIGTERM took {took:?} with 20 stalled streams (grace 2 s)"
    );
    drop(stalled);
}

#[test]
fn sigterm_with_fifty_open_streams_exits_within_the_grace() {
    let dir = HubDir::new(&[], "");
    let mut hub = dir.start_with_env(&[("GOVHUB__SERVER__SHUTDOWN_GRACE_MS", "3000")]);
    let mut streams: Vec<SseClient> = (0..50)
        .map(|_| SseClient::open(&hub.base, "/v1/stream", None))
        .collect();
    assert!(streams.iter().all(|s| s.status == 200));
    send_alerts(&hub, &["before-stop".to_string()], "yingfeng");
    for s in &mut streams {
        assert_eq!(event_ids(&s.take("event", 1, WAIT)), ["before-stop"]);
    }
    let took = hub.terminate(Duration::from_secs(10));
    assert!(
        took < Duration::from_millis(3000),
        "SIGTERM took {took:?} with 50 open streams (grace 3 s)"
    );
    assert!(streams
        .iter_mut()
        .all(|s| s.ends_within(Duration::from_secs(2))));
}

#[test]
fn the_stream_carries_cases_adapters_and_dead_letters_too() {
    let receiver = Receiver::start();
    receiver.answer(400);
    let spec = AdapterSpec::new("dept", "webhook-adapter")
        .top("subscribe = [\"gov.incident.*\"]")
        .tables(&format!(
            "[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/events\"\n",
            h = receiver.host()
        ));
    let dir = HubDir::new(
        &[spec],
        "[[routes]]\nname = \"water\"\nmatch = { type = \"gov.incident.reported\" }\nto = [\"dept\"]\n",
    );
    let hub = dir.start();
    // From the start of the feed: the adapter's load is in it.
    let mut s = SseClient::open(&hub.base, "/v1/stream?after=0", None);
    let loaded = s.take("adapter", 1, WAIT).remove(0).json();
    assert_eq!(
        (loaded["adapter"].as_str(), loaded["change"].as_str()),
        (Some("dept"), Some("load"))
    );
    let report = cloudevent("boat-1", None, 10);
    let (status, _, body) = send_event(&hub.base, &report).unwrap();
    assert_eq!(status, 202, "{body}");
    // The report, its case, and (the department refuses with 400) its
    // dead letter, in whatever order they commit.
    let mut by_kind = std::collections::HashMap::new();
    let deadline = Instant::now() + WAIT;
    while by_kind.len() < 3 {
        assert!(Instant::now() < deadline, "only {:?} came", by_kind.keys());
        if let Some(item) = s.next(Duration::from_secs(5)) {
            if ["event", "case", "dead-letter"].contains(&item.event.as_str()) {
                by_kind.entry(item.event.clone()).or_insert(item.json());
            }
        }
    }
    let caseid = by_kind["event"]["caseid"].as_str().unwrap().to_string();
    let case = &by_kind["case"];
    assert_eq!(case["id"], caseid.as_str());
    assert!(case["resolve_due_ms"].as_i64().unwrap() > case["opened_ms"].as_i64().unwrap());
    let dead = &by_kind["dead-letter"];
    assert_eq!(
        (dead["target"].as_str(), dead["event_id"].as_str()),
        (Some("dept"), Some("boat-1"))
    );
    assert_eq!(dead["caseid"], caseid.as_str());
    // Replayed, it says so.
    let (status, _, body) = post(
        &hub.url(&format!("/v1/dead-letters/{}/replay", dead["id"])),
        &[],
        b"",
    );
    assert!(status < 300, "{body}");
    let replayed = s.take("dead-letter", 1, WAIT).remove(0).json();
    assert_eq!(
        (replayed["id"].clone(), replayed["replayed"].clone()),
        (dead["id"].clone(), true.into())
    );
}
