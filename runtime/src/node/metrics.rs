//! The counters of a node that its status JSON does not carry, for
//! `GET /metrics` (Prometheus' text exposition format): record steps per
//! track, step and rule, counted by the block workers after a block
//! commits, and each run's duration, observed by the owner when the run
//! finishes. Each node counts its own; Prometheus sums the group.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of `trackc_run_duration_seconds`' buckets: from a run of
/// a few records (a tenth of a second) to an hour-long one.
pub const RUN_SECONDS_BUCKETS: [f64; 10] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0];
/// The most label sets kept per metric: a bundle has at most 10,000
/// tracks, and series of tracks no longer deployed stay until a restart;
/// beyond this, new series are not counted (and the drop is counted).
pub const SERIES_MAX: usize = 100_000;

#[derive(Default)]
struct Histogram {
    /// Observations at or under each bound of `RUN_SECONDS_BUCKETS`.
    buckets: [u64; RUN_SECONDS_BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Counters {
    /// (track, step, rule or `none`) → record steps.
    record_steps: BTreeMap<(String, String, String), u64>,
    runs: BTreeMap<String, Histogram>,
    dropped: u64,
}

#[derive(Default)]
pub struct NodeMetrics {
    counters: Mutex<Counters>,
}

impl NodeMetrics {
    /// Adds a committed block's record steps: `(step, rule)` names and
    /// their counts.
    pub fn add_record_steps(&self, track: &str, steps: &[(String, String, u64)]) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (step, rule, n) in steps {
            let key = (track.to_string(), step.clone(), rule.clone());
            if let Some(v) = c.record_steps.get_mut(&key) {
                *v += n;
            } else if c.record_steps.len() < SERIES_MAX {
                c.record_steps.insert(key, *n);
            } else {
                c.dropped += 1;
            }
        }
    }

    /// Observes a finished run of `track` that took `seconds`.
    pub fn observe_run(&self, track: &str, seconds: f64) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if !c.runs.contains_key(track) && c.runs.len() >= SERIES_MAX {
            c.dropped += 1;
            return;
        }
        let h = c.runs.entry(track.to_string()).or_default();
        for (bound, n) in RUN_SECONDS_BUCKETS.iter().zip(h.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// The counters in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(
            "# HELP trackc_record_steps_total Evaluations of a record in a step by this node, \
             by the rule that fired (none: no rule).\n# TYPE trackc_record_steps_total counter\n",
        );
        for ((track, step, rule), n) in &c.record_steps {
            let _ = writeln!(
                out,
                "trackc_record_steps_total{{track=\"{}\",step=\"{}\",rule=\"{}\"}} {n}",
                label(track),
                label(step),
                label(rule)
            );
        }
        out.push_str(
            "# HELP trackc_run_duration_seconds Runs this node owned, from opening to the last \
             block committed.\n# TYPE trackc_run_duration_seconds histogram\n",
        );
        for (track, h) in &c.runs {
            let track = label(track);
            for (bound, n) in RUN_SECONDS_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "trackc_run_duration_seconds_bucket{{track=\"{track}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "trackc_run_duration_seconds_bucket{{track=\"{track}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "trackc_run_duration_seconds_sum{{track=\"{track}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "trackc_run_duration_seconds_count{{track=\"{track}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP trackc_metrics_series_dropped_total Observations not counted: more than \
             100,000 label sets.\n# TYPE trackc_metrics_series_dropped_total counter\n",
        );
        let _ = writeln!(out, "trackc_metrics_series_dropped_total {}", c.dropped);
    }
}

/// A label value escaped as the exposition format wants (`\`, `"`, line
/// breaks).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_run_in_every_bucket_it_fits() {
        let m = NodeMetrics::default();
        m.observe_run("t", 0.3);
        m.observe_run("t", 20.0);
        m.add_record_steps(
            "t",
            &[("a".into(), "1".into(), 5), ("a".into(), "none".into(), 2)],
        );
        m.add_record_steps("t", &[("a".into(), "1".into(), 1)]);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("trackc_run_duration_seconds_bucket{track=\"t\",le=\"0.25\"} 0\n"));
        assert!(out.contains("trackc_run_duration_seconds_bucket{track=\"t\",le=\"0.5\"} 1\n"));
        assert!(out.contains("trackc_run_duration_seconds_bucket{track=\"t\",le=\"60\"} 2\n"));
        assert!(out.contains("trackc_run_duration_seconds_bucket{track=\"t\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("trackc_run_duration_seconds_count{track=\"t\"} 2\n"));
        assert!(out.contains("trackc_record_steps_total{track=\"t\",step=\"a\",rule=\"1\"} 6\n"));
        assert!(out.contains("trackc_record_steps_total{track=\"t\",step=\"a\",rule=\"none\"} 2\n"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
