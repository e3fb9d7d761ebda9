//! What the cluster looks like now: live workers (from their heartbeats),
//! jobs pending for a model, dead letters. The gateway's `/health` and
//! `whisper-serve cluster status` show the same numbers.

use futures::TryStreamExt;
use serde_json::json;

use super::{Bus, WorkerInfo};
use crate::config::ClusterConfig;

#[derive(Debug, Clone, Default)]
pub struct ClusterStatus {
    /// Live workers of every model, by id.
    pub workers: Vec<WorkerInfo>,
    /// Jobs of the model waiting for a worker, and held by one.
    pub pending: Option<u64>,
    pub in_progress: Option<usize>,
    pub dead_letters: Option<u64>,
}

/// A heartbeat older than this many intervals means the worker is gone.
const MISSED_BEATS: i64 = 3;

impl ClusterStatus {
    pub async fn gather(bus: &Bus, model: &str) -> ClusterStatus {
        let mut workers = Vec::new();
        let now = crate::jobs::now_ms();
        let stale_ms = bus.cfg.heartbeat_s as i64 * 1000 * MISSED_BEATS;
        // The bucket's subjects, from one stream-info request, rather than
        // `Store::keys`: its consumer waits for a last entry that can expire
        // (heartbeats have a TTL) before it is delivered, and then hangs.
        let subjects = async {
            let info = bus.workers.stream.info_with_subjects(format!("{}>", bus.workers.prefix)).await.ok()?;
            info.try_collect::<std::collections::HashMap<String, usize>>().await.ok()
        };
        if let Some(subjects) = subjects.await {
            for subject in subjects.keys() {
                let Some(key) = subject.strip_prefix(&bus.workers.prefix) else { continue };
                let Ok(Some(value)) = bus.workers.get(key).await else { continue };
                let Ok(info) = serde_json::from_slice::<WorkerInfo>(&value) else { continue };
                // Clocks of different machines: a beat "from the future" counts as fresh.
                if now - info.heartbeat_at_ms <= stale_ms {
                    workers.push(info);
                }
            }
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        let (pending, in_progress) = match bus.consumer_pending(model).await {
            Some((p, a)) => (Some(p), Some(a)),
            None => (None, None),
        };
        ClusterStatus { workers, pending, in_progress, dead_letters: bus.dead_letters().await }
    }

    /// Workers that serve `model` (compared as subject tokens).
    pub fn serving<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a WorkerInfo> + 'a {
        let token = ClusterConfig::model_token(model);
        self.workers.iter().filter(move |w| ClusterConfig::model_token(&w.model) == token)
    }

    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let workers: Vec<_> = self
            .workers
            .iter()
            .map(|w| json!({"id": w.id, "model": w.model, "host": w.host, "device": w.device,
                "capacity": w.capacity, "busy": w.busy, "jobs_done": w.jobs_done, "version": w.version}))
            .collect();
        let mut m = serde_json::Map::new();
        m.insert("workers".into(), workers.into());
        m.insert("pending_jobs".into(), self.pending.into());
        m.insert("jobs_in_progress".into(), self.in_progress.into());
        m.insert("dead_letters".into(), self.dead_letters.into());
        m
    }

    /// A plain-text table for `whisper-serve cluster status`.
    pub fn table(&self, model: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "{:<40} {:<12} {:<8} {:>8} {:>5} {:>10}", "WORKER", "MODEL", "DEVICE", "CAPACITY", "BUSY", "JOBS DONE");
        for w in &self.workers {
            let _ = writeln!(out, "{:<40} {:<12} {:<8} {:>8} {:>5} {:>10}", w.id, w.model, w.device, w.capacity, w.busy, w.jobs_done);
        }
        let show = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
        let serving = self.serving(model).count();
        let _ = writeln!(out);
        let _ = writeln!(out, "workers serving {model}: {serving}");
        let _ = writeln!(out, "pending jobs ({model}): {}", show(self.pending));
        let _ = writeln!(out, "jobs in progress ({model}): {}", show(self.in_progress.map(|n| n as u64)));
        let _ = writeln!(out, "dead letters: {}", show(self.dead_letters));
        out
    }
}
