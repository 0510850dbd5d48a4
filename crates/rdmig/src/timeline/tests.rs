use serde_json::json;

use super::*;

const MS: u64 = 1_000_000;
/// The true clock offset of the synthetic timelines: dst's clock reads 5 s more than src's.
const TRUE_OFFSET: i64 = 5_000_000_000;

fn ev(node: &str, seq: u64, phase: Phase, edge: Edge, t_ms: u64, a: Attrs) -> Event {
    Event { seq, node: node.into(), phase, edge, t_ns: t_ms * MS, attrs: a }
}

/// A probe whose one-way delays are `out` and `back` and whose remote holds it `hold` ns.
fn sample(t0: u64, out: u64, hold: u64, back: u64, offset: i64) -> ClockSample {
    let t1 = (t0 as i64 + out as i64 + offset) as u64;
    ClockSample { t0, t1, t2: t1 + hold, t3: t0 + out + hold + back }
}

fn src_events() -> Vec<Event> {
    use Edge::*;
    use Phase::*;
    let n = Attrs::new;
    vec![
        ev("src", 0, Check, Start, 1000, n()),
        ev("src", 1, Check, End, 1002, n()),
        ev("src", 2, PrecopyRound(1), Start, 1002, n()),
        ev("src", 3, PrecopyRound(1), End, 1302, attrs([("pages", 65536u64), ("bytes", 256 << 20)])),
        ev("src", 4, PrecopyRound(2), Start, 1302, n()),
        ev("src", 5, PrecopyRound(2), End, 1352, attrs([("pages", 2048u64), ("bytes", 8 << 20)])),
        ev("src", 6, Freeze, Start, 1352, n()),
        ev("src", 7, Freeze, End, 1353, n()),
        ev("src", 8, FinalDump, Start, 1353, n()),
        ev("src", 9, FinalDump, End, 1373, attrs([("pages", 512u64), ("bytes", 2 << 20), (super::RDMA_US, 4500)])),
        ev("src", 10, Transfer, Start, 1373, n()),
        ev("src", 11, Other("note".into()), Instant, 1380, attrs([("why", "mark")])),
        ev("src", 12, Transfer, End, 1390, n()),
    ]
}

/// dst's events on dst's clock (src time + 5 s).
fn dst_events() -> Vec<Event> {
    use Edge::*;
    use Phase::*;
    let n = Attrs::new;
    vec![
        ev("dst", 0, Restore, Start, 6390, n()),
        ev("dst", 1, Restore, End, 6410, attrs([(super::RDMA_US, 7000u64)])),
        ev("dst", 2, Resume, Start, 6410, n()),
        ev("dst", 3, Resume, End, 6412, n()),
        ev("dst", 4, Cleanup, Start, 6412, n()),
        ev("dst", 5, Cleanup, End, 6420, n()),
    ]
}

/// An estimate of the true offset with a 40 ns round trip (20 ns uncertainty).
fn estimate() -> OffsetEstimate {
    estimate_offset(&[sample(100, 20, 5, 20, TRUE_OFFSET)]).unwrap()
}

fn timeline() -> Timeline {
    Timeline::merge("src", src_events(), "dst", dst_events(), &estimate()).unwrap()
}

// ----- clock offsets

#[test]
fn offset_picks_the_min_rtt_sample() {
    let samples = [
        sample(100, 300, 50, 100, TRUE_OFFSET),      // rtt 400, estimate off by +100
        sample(1_000, 20, 7, 20, TRUE_OFFSET),       // rtt 40, exact
        sample(2_000, 90, 3, 500, TRUE_OFFSET),      // rtt 590, off by -205
        ClockSample { t0: 10, t1: 1, t2: 2, t3: 5 }, // received before sent: unusable
    ];
    let e = estimate_offset(&samples).unwrap();
    assert_eq!(e.offset_ns, TRUE_OFFSET);
    assert_eq!(e.rtt_ns, 40);
    assert_eq!(e.uncertainty_ns, 20);
    assert_eq!(e.samples, 3);
    // Whatever the asymmetry, each sample's estimate is within its own bound.
    for s in &samples[..3] {
        let err = (s.offset_ns().unwrap() - TRUE_OFFSET).unsigned_abs();
        assert!(err <= s.rtt_ns().unwrap().div_ceil(2), "{s:?}");
    }
}

#[test]
fn offset_sign_is_remote_minus_local() {
    let ahead = estimate_offset(&[sample(1_000, 10, 0, 10, 777)]).unwrap();
    assert_eq!(ahead.offset_ns, 777);
    assert_eq!(ahead.to_local(10_777), Some(10_000));
    let behind = estimate_offset(&[sample(1_000_000, 10, 0, 10, -5_000)]).unwrap();
    assert_eq!(behind.offset_ns, -5_000);
    assert_eq!(behind.to_local(5_000), Some(10_000));
}

#[test]
fn offset_rounds_the_uncertainty_up() {
    // rtt 3: the bound [offset-?] must still hold after the midpoint is rounded down.
    let s = ClockSample { t0: 0, t1: 100, t2: 100, t3: 3 };
    let e = estimate_offset(&[s]).unwrap();
    assert_eq!(e.uncertainty_ns, 2);
    // Bounds from the sample: [t2 - t3, t1 - t0] = [97, 100].
    assert!(e.offset_ns - e.uncertainty_ns as i64 <= 97 && e.offset_ns + e.uncertainty_ns as i64 >= 100);
}

#[test]
fn offset_needs_a_usable_sample() {
    assert!(matches!(estimate_offset(&[]), Err(TimelineError::NoClockSamples { given: 0 })));
    // The remote held the probe longer than the whole round trip: impossible.
    let bad = ClockSample { t0: 0, t1: 10, t2: 100, t3: 50 };
    assert!(matches!(estimate_offset(&[bad]), Err(TimelineError::NoClockSamples { given: 1 })));
}

#[test]
fn measure_on_one_clock_finds_no_offset() {
    let s = ClockSample::measure(|| -> Result<(u64, u64), ()> {
        let t1 = monotonic_ns();
        Ok((t1, monotonic_ns()))
    })
    .unwrap();
    let e = estimate_offset(&[s]).unwrap();
    assert!(e.offset_ns.unsigned_abs() <= e.uncertainty_ns, "{e:?}");
}

// ----- recorder

#[test]
fn recorder_numbers_and_stamps_in_order() {
    let r = std::sync::Arc::new(Recorder::new("src"));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    r.instant(Phase::Other("tick".into()), attrs([("i", i)]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let evs = r.events();
    assert_eq!(evs.len(), 2000);
    for (i, w) in evs.windows(2).enumerate() {
        assert_eq!(w[0].seq, i as u64);
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert!(w[1].t_ns >= w[0].t_ns);
    }
    assert_eq!(r.take().len(), 2000);
    assert!(r.events().is_empty());
    assert_eq!(r.start(Phase::Check), 2000, "numbering goes on after take");
    assert_eq!(r.node(), "src");
}

// ----- merge

#[test]
fn merge_puts_remote_events_on_the_local_clock_in_order() {
    let tl = timeline();
    assert_eq!(tl.events.len(), 19);
    assert!(tl.events.windows(2).all(|w| (w[0].t_ns, w[0].event.seq) <= (w[1].t_ns, w[1].event.seq)));
    let restore = tl.events.iter().find(|te| te.event.phase == Phase::Restore).unwrap();
    assert_eq!(restore.t_ns, 1390 * MS, "on src's clock");
    assert_eq!(restore.event.t_ns, 6390 * MS, "as recorded");
    // At 1390 ms src's Transfer End (seq 12) and dst's Restore Start (seq 0) tie: seq decides.
    let at: Vec<(&str, u64)> = tl.events.iter().filter(|te| te.t_ns == 1390 * MS).map(|te| (te.event.node.as_str(), te.event.seq)).collect();
    assert_eq!(at, vec![("dst", 0), ("src", 12)]);
    assert_eq!(tl.clock("dst").unwrap().offset_ns, TRUE_OFFSET);
    assert_eq!(tl.uncertainty_between("src", "dst"), 20);
    assert_eq!(tl.uncertainty_between("dst", "dst"), 0);
}

#[test]
fn merge_sorts_out_of_order_input() {
    let mut src = src_events();
    src.reverse();
    let tl = Timeline::merge("src", src, "dst", dst_events(), &estimate()).unwrap();
    assert_eq!(tl, timeline());
}

#[test]
fn merge_refuses_inconsistent_input() {
    let est = estimate();
    let e = Timeline::merge("src", src_events(), "src", vec![], &est);
    assert!(matches!(e, Err(TimelineError::SameNode(_))));
    let e = Timeline::merge("src", dst_events(), "dst", vec![], &est);
    assert!(matches!(e, Err(TimelineError::NodeMismatch { .. })));
    let mut dup = src_events();
    dup[1].seq = 0;
    assert!(matches!(Timeline::single("src", dup), Err(TimelineError::DuplicateSeq { seq: 0, .. })));
    let mut back = src_events();
    back[3].t_ns = MS;
    assert!(matches!(Timeline::single("src", back), Err(TimelineError::ClockWentBackwards { seq: 3, .. })));
    // dst's clock 5 s ahead, but an event at 1 s on it would be before src's clock's zero.
    let early = vec![ev("dst", 0, Phase::Restore, Edge::Start, 1000, Attrs::new())];
    assert!(matches!(Timeline::merge("src", vec![], "dst", early, &est), Err(TimelineError::TimeOutOfRange { .. })));
}

// ----- summary

#[test]
fn summary_numbers() {
    let s = Summary::from_timeline(&timeline()).unwrap();
    assert_eq!(s.origin_ns, 1000 * MS);
    assert_eq!(s.downtime_ns, 60 * MS, "freeze start 1352 ms on src to resume end 1412 ms on dst");
    assert_eq!(s.downtime_uncertainty_ns, 20);
    assert_eq!(s.stops.len(), 1);
    assert_eq!((s.stops[0].freeze_node.as_str(), s.stops[0].resume_node.as_str()), ("src", "dst"));
    assert_eq!(s.total_ns, 420 * MS);
    assert_eq!(s.total_uncertainty_ns, 20);
    assert_eq!(s.spans.len(), 9);
    let dur = |p: Phase| s.spans.iter().find(|x| x.phase == p).unwrap().duration_ns;
    assert_eq!(dur(Phase::Check), 2 * MS);
    assert_eq!(dur(Phase::FinalDump), 20 * MS);
    assert_eq!(dur(Phase::Transfer), 17 * MS);
    assert_eq!(dur(Phase::Restore), 20 * MS);
    assert_eq!(dur(Phase::Cleanup), 8 * MS);
    assert_eq!(s.precopy_rounds.len(), 2);
    assert_eq!(
        s.precopy_rounds[0],
        PrecopyRound { round: 1, node: "src".into(), start_ns: 1002 * MS, duration_ns: 300 * MS, pages: Some(65536), bytes: Some(256 << 20) }
    );
    assert_eq!(s.precopy_ns, 350 * MS);
    assert_eq!(s.precopy_pages, 65536 + 2048);
    assert_eq!(s.precopy_bytes, (256 + 8) << 20);
    // Spans are ordered by start.
    assert!(s.spans.windows(2).all(|w| w[0].start_ns <= w[1].start_ns));
}

#[test]
fn summary_on_one_node_has_no_uncertainty() {
    let mut evs = src_events();
    evs.push(ev("src", 13, Phase::Resume, Edge::Start, 1391, Attrs::new()));
    evs.push(ev("src", 14, Phase::Resume, Edge::End, 1392, Attrs::new()));
    let s = Summary::from_timeline(&Timeline::single("src", evs).unwrap()).unwrap();
    assert_eq!(s.downtime_ns, 40 * MS);
    assert_eq!(s.downtime_uncertainty_ns, 0);
}

#[test]
fn summary_adds_up_several_stops() {
    use Edge::*;
    use Phase::*;
    let n = Attrs::new;
    let evs = vec![
        ev("src", 0, Freeze, Start, 100, n()),
        ev("src", 1, Freeze, End, 101, n()),
        ev("src", 2, Rollback, Start, 110, n()),
        ev("src", 3, Rollback, End, 115, n()),
        ev("src", 4, Resume, Start, 118, n()),
        ev("src", 5, Resume, End, 120, n()),
        ev("src", 6, Freeze, Start, 200, n()),
        ev("src", 7, Freeze, End, 201, n()),
        ev("src", 8, Resume, Start, 228, n()),
        ev("src", 9, Resume, End, 230, n()),
    ];
    let s = Summary::from_timeline(&Timeline::single("src", evs).unwrap()).unwrap();
    assert_eq!(s.stops.len(), 2);
    assert_eq!(s.downtime_ns, 50 * MS);
}

#[test]
fn summary_text() {
    let text = Summary::from_timeline(&timeline()).unwrap().render_text();
    assert!(text.contains("downtime        60.0 ms ± 20 ns"), "{text}");
    assert!(text.contains("total          420.0 ms"), "{text}");
    assert!(text.contains("precopy_round 1"), "{text}");
    assert!(text.contains("256.0 MiB"), "{text}");
    assert!(text.contains("dst clock: offset +5000.000 ms"), "{text}");
    let line = text.lines().find(|l| l.starts_with("final_dump")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, ["final_dump", "src", "353.0", "20.0", "512", "2.0", "MiB", "4.5"]);
    // The plugin's share of the destination's restore, in its own column.
    let line = text.lines().find(|l| l.starts_with("restore")).unwrap();
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["restore", "dst", "390.0", "20.0", "7.0"]);
}

#[test]
fn human_readable_bytes() {
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(1023), "1023 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(256 << 20), "256.0 MiB");
    assert_eq!(human_bytes(3 << 30), "3.0 GiB");
}

// ----- errors

fn summary_of(evs: Vec<Event>) -> Result<Summary, TimelineError> {
    Summary::from_timeline(&Timeline::single("src", evs)?)
}

#[test]
fn end_without_start() {
    let mut evs = src_events();
    evs.remove(8); // FinalDump Start
    assert!(matches!(summary_of(evs), Err(TimelineError::EndWithoutStart { phase: Phase::FinalDump, seq: 9, .. })));
}

#[test]
fn start_without_end_and_duplicate_start() {
    let mut evs = src_events();
    evs.remove(12); // Transfer End
    assert!(matches!(summary_of(evs), Err(TimelineError::StartWithoutEnd { phase: Phase::Transfer, seq: 10, .. })));
    let mut evs = src_events();
    evs[9] = ev("src", 9, Phase::FinalDump, Edge::Start, 1373, Attrs::new());
    assert!(matches!(summary_of(evs), Err(TimelineError::DuplicateStart { phase: Phase::FinalDump, seq: 9, .. })));
}

#[test]
fn missing_freeze_or_resume() {
    // src alone never resumes.
    assert!(matches!(summary_of(src_events()), Err(TimelineError::MissingResume(_))));
    // dst alone never froze.
    let tl = Timeline::single("dst", dst_events()).unwrap();
    assert!(matches!(Summary::from_timeline(&tl), Err(TimelineError::MissingFreeze(_))));
}

#[test]
fn negative_durations() {
    // A wrong offset (dst taken as 5.1 s ahead) puts dst's resume before src's freeze.
    let wrong = OffsetEstimate { offset_ns: TRUE_OFFSET + 100 * MS as i64, rtt_ns: 40, uncertainty_ns: 20, samples: 1 };
    let tl = Timeline::merge("src", src_events(), "dst", dst_events(), &wrong).unwrap();
    match Summary::from_timeline(&tl) {
        Err(TimelineError::NegativeDuration { start_ns, end_ns, uncertainty_ns, .. }) => {
            assert_eq!((start_ns, end_ns, uncertainty_ns), (1352 * MS, 1312 * MS, 20));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_counts_are_errors() {
    let mut evs = src_events();
    evs[3].attrs.insert("pages".into(), json!("many"));
    evs.push(ev("src", 13, Phase::Resume, Edge::Start, 1399, Attrs::new()));
    evs.push(ev("src", 14, Phase::Resume, Edge::End, 1400, Attrs::new()));
    assert!(matches!(summary_of(evs), Err(TimelineError::BadAttr { seq: 3, .. })));
}

// ----- JSON

#[test]
fn json_round_trip() {
    let tl = timeline();
    let back = Timeline::from_json(&tl.to_json().unwrap()).unwrap();
    assert_eq!(back, tl);
    let s = Summary::from_timeline(&tl).unwrap();
    let back = Summary::from_json(&s.to_json().unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn json_shape_of_events() {
    let e = &src_events()[3];
    let v = serde_json::to_value(e).unwrap();
    assert_eq!(v["phase"], json!({"precopy_round": 1}));
    assert_eq!(v["edge"], json!("end"));
    assert_eq!(v["attrs"]["pages"], json!(65536));
    let v = serde_json::to_value(&src_events()[8]).unwrap();
    assert_eq!(v["phase"], json!("final_dump"));
    assert!(v.get("attrs").is_none(), "empty attrs are left out");
    let other: Phase = serde_json::from_value(json!({"other": "warmup"})).unwrap();
    assert_eq!(other, Phase::Other("warmup".into()));
}

#[test]
fn json_files_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let tl = timeline();
    let p = dir.path().join("timeline.json");
    tl.write_json(&p).unwrap();
    assert_eq!(Timeline::from_json(&std::fs::read_to_string(&p).unwrap()).unwrap(), tl);
    let p = dir.path().join("summary.json");
    Summary::from_timeline(&tl).unwrap().write_json(&p).unwrap();
    assert!(std::fs::read_to_string(&p).unwrap().contains("\"downtime_ns\": 60000000"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file left behind");
}

// ----- chart

#[test]
fn png_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let tl = timeline();
    let s = Summary::from_timeline(&tl).unwrap();
    // Any name works, not only *.png.
    for name in ["timeline.png", "chart.out"] {
        let p = dir.path().join(name);
        plot_png(&tl, &s, &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        assert!(bytes.len() > 4000, "{name}: only {} bytes", bytes.len());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file left behind");
}

#[test]
fn plugin_steps_from_a_peer_are_capped_and_only_plugin_names_pass() {
    let steps =
        vec![("create_qp".to_string(), 46_000), ("read_images".to_string(), 71_000), ("Bad Name".to_string(), 1), ("x".repeat(33), 2), (String::new(), 3)];
    let v = super::steps_json(&steps).unwrap();
    assert_eq!(v, serde_json::json!({ "create_qp": 46_000, "read_images": 71_000 }));
    assert_eq!(super::steps_json(&[]), None);
    assert_eq!(super::steps_json(&[("../x".to_string(), 1)]), None);
    let many: Vec<(String, u64)> = (0..100).map(|i| (format!("s{i}"), i)).collect();
    assert_eq!(super::steps_json(&many).unwrap().as_object().unwrap().len(), super::MAX_STEPS);
}

#[test]
fn a_process_start_is_read_after_the_command_name_whatever_it_holds() {
    let line = "4242 (a (b) ) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 3 1 0 0 20 0 1 0 123456 1000 10 18446744073709551615";
    assert_eq!(event::start_ticks_of(line), Some(123456));
    assert_eq!(event::start_ticks_of("4242 (x) S 1"), None, "a short line");
    assert_eq!(event::start_ticks_of("no parenthesis at all"), None);
}

#[test]
fn this_process_started_before_now_and_not_long_ago() {
    let start = process_start_ns().expect("/proc/self/stat and CLOCK_BOOTTIME are readable");
    let now = monotonic_ns();
    assert!(start <= now, "started {start} after now {now}");
    // A test binary starts seconds before its tests run; an hour would be a wrong clock.
    assert!(now - start < 3600 * 1_000_000_000, "started {} s ago", (now - start) / 1_000_000_000);
}

#[test]
fn a_phase_since_an_earlier_time_keeps_sequence_and_time_in_order() {
    let rec = Recorder::new("src");
    // Before any event: the span starts where it was asked to.
    let t0 = monotonic_ns().saturating_sub(5_000_000);
    rec.since(Phase::Startup, t0);
    rec.start(Phase::Check);
    // After other events, an earlier start is moved up to the last one's time.
    rec.since(Phase::Other("late".into()), 0);
    let ev = rec.events();
    assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!((ev[0].phase.clone(), ev[0].edge, ev[0].t_ns), (Phase::Startup, Edge::Start, t0));
    assert_eq!((ev[1].phase.clone(), ev[1].edge), (Phase::Startup, Edge::End));
    assert!(ev.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "{ev:?}");
    assert_eq!(ev[3].t_ns, ev[2].t_ns, "the late span starts at the last event, not before it");
    assert_eq!(serde_json::to_value(&ev[0].phase).unwrap(), json!("startup"));
}
