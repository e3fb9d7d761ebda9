//! The models of this process: the default one (`model.size`), loaded at
//! start-up and kept, and the others a request names, loaded on first use
//! (pulled first with `models.pull_on_demand`), each with its own engine
//! [`Pool`] (replicas and batchers: batches never mix models), and unloaded
//! after `models.ttl_s` idle or evicted (least recently used idle one
//! first) to stay within `models.max_loaded`.
//!
//! A user of a model holds a [`Lease`]; a model is unloaded only while no
//! lease is out, so work in flight never loses its engine. A model that
//! cannot be loaded now (the cap reached with every model busy, or not
//! enough free memory for it) is a 503 with `Retry-After`, never an
//! out-of-memory crash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::pool::{BatchSettings, Pool, PoolLimits};
use super::DispatchError;
use crate::config::Config;
use crate::engine::Engine;
use crate::models;

/// How long a caller waits at most for another caller's load of the same
/// model before it is told to come back.
const LOAD_WAIT: Duration = Duration::from_secs(600);
/// How often idle models are checked against `models.ttl_s`.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// What a 503 for a model that cannot be loaded now asks the client to wait.
const RETRY_AFTER_S: u64 = 5;

/// One loaded model.
pub struct Loaded {
    pub id: String,
    pool: Arc<Pool>,
    /// Seconds its engine took to load (pulling not counted).
    pub load_s: f64,
    /// Leases out now.
    in_use: AtomicUsize,
    last_used: Mutex<Instant>,
}

impl Loaded {
    fn new(id: String, pool: Arc<Pool>, load_s: f64) -> Arc<Self> {
        Arc::new(Loaded { id, pool, load_s, in_use: AtomicUsize::new(0), last_used: Mutex::new(Instant::now()) })
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_use.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.last_used.lock().ok().map(|t| t.elapsed())
    }
}

/// A model in use: its pool stays loaded until every lease is dropped.
pub struct Lease {
    model: Arc<Loaded>,
    set: Arc<ModelSet>,
}

impl Lease {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.model.pool
    }

    pub fn id(&self) -> &str {
        &self.model.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut t) = self.model.last_used.lock() {
            *t = Instant::now();
        }
        if self.model.in_use.fetch_sub(1, Ordering::SeqCst) == 1 && self.set.config.models.ttl_s == 0 {
            self.set.reap();
        }
    }
}

enum Slot {
    Loading,
    Ready(Arc<Loaded>),
}

/// What `GET /v1/models` says of one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelState {
    pub id: String,
    /// `loaded`, `loading`, `available` (in `model.model_dir`) or
    /// `downloadable` (a known name `models.pull_on_demand` would fetch).
    pub state: &'static str,
    /// The model `whisper-1` and the original route use.
    pub default: bool,
    /// Transcriptions holding it now (loaded models only).
    pub in_use: Option<usize>,
    /// Seconds its engine took to load (loaded models only).
    pub load_s: Option<f64>,
}

pub struct ModelSet {
    config: Arc<Config>,
    default_id: String,
    default: OnceLock<Arc<Loaded>>,
    others: Mutex<HashMap<String, Slot>>,
    changed: Notify,
}

impl ModelSet {
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        let default_id = models::default_id(&config.model.size);
        let me = Arc::new(ModelSet { config, default_id, default: OnceLock::new(), others: Mutex::new(HashMap::new()), changed: Notify::new() });
        if let Some(ttl) = me.config.models.ttl() {
            let weak = Arc::downgrade(&me);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REAP_EVERY.min(ttl.max(Duration::from_millis(200)))).await;
                    let Some(set) = weak.upgrade() else { return };
                    set.reap();
                }
            });
        }
        me
    }

    /// The default model's pool, once it has loaded.
    pub fn attach_default(&self, pool: Arc<Pool>, load_s: f64) {
        let _ = self.default.set(Loaded::new(self.default_id.clone(), pool, load_s));
    }

    pub fn default_id(&self) -> &str {
        &self.default_id
    }

    /// Whether `name` means the default model (None, `whisper-1`, its
    /// configured name or id).
    pub fn is_default(&self, name: Option<&str>) -> bool {
        match name {
            None => true,
            Some(n) => {
                n == "whisper-1"
                    || n == self.config.model.size
                    || n == self.default_id
                    || models::resolve(n, &self.config.model.model_dir).is_some_and(|r| r.id == self.default_id)
            }
        }
    }

    fn others(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the map cannot leave it half-changed (each
        // change is one insert or remove), so a poisoned lock is still good.
        self.others.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model `name` names, loading it if needed; `default` is the
    /// default model's lease maker (its pool may still be loading).
    pub async fn lease(self: &Arc<Self>, name: Option<&str>, default: impl FnOnce() -> Result<Arc<Pool>, DispatchError>) -> Result<Lease, DispatchError> {
        if self.is_default(name) {
            let pool = default()?;
            let model = self.default.get().cloned().unwrap_or_else(|| Loaded::new(self.default_id.clone(), pool, 0.0));
            return Ok(self.hand_out(model));
        }
        let name = name.unwrap_or_default();
        let found = models::resolve(name, &self.config.model.model_dir).ok_or_else(|| self.unknown(name))?;
        if !found.pullable && !models::is_complete(&found.path) {
            return Err(self.unknown(name));
        }
        if !models::is_complete(&found.path) && !self.config.models.pull_on_demand {
            return Err(self.unknown(name));
        }
        let deadline = Instant::now() + LOAD_WAIT;
        loop {
            let waiting = self.changed.notified();
            let load_it = {
                let mut others = self.others();
                match others.get(&found.id) {
                    Some(Slot::Ready(m)) => return Ok(self.hand_out(m.clone())),
                    Some(Slot::Loading) => false,
                    None => {
                        self.make_room(&mut others, &found.path)?;
                        others.insert(found.id.clone(), Slot::Loading);
                        true
                    }
                }
            };
            if load_it {
                return self.load(found.id, found.path).await;
            }
            // Someone else is loading it: wait for them.
            if tokio::time::timeout_at(deadline.into(), waiting).await.is_err() {
                return Err(DispatchError::ModelBusy { reason: format!("the model `{}` is still loading", found.id), retry_after_s: RETRY_AFTER_S });
            }
        }
    }

    fn hand_out(self: &Arc<Self>, model: Arc<Loaded>) -> Lease {
        model.in_use.fetch_add(1, Ordering::SeqCst);
        Lease { model, set: self.clone() }
    }

    /// Frees a place for one more model (evicting the least recently used
    /// idle one if the cap is reached) and checks the memory it needs.
    fn make_room(&self, others: &mut HashMap<String, Slot>, path: &std::path::Path) -> Result<(), DispatchError> {
        let cap = self.config.models.max_loaded;
        // The default model always holds one place.
        while others.len() + 1 >= cap {
            let lru = others
                .iter()
                .filter_map(|(id, s)| match s {
                    Slot::Ready(m) => m.idle_for().map(|idle| (id.clone(), idle)),
                    Slot::Loading => None,
                })
                .max_by_key(|(_, idle)| *idle);
            let Some((id, _)) = lru else {
                return Err(DispatchError::ModelBusy {
                    reason: format!("{cap} models are loaded (models.max_loaded) and all are in use"),
                    retry_after_s: RETRY_AFTER_S,
                });
            };
            tracing::info!(model = %id, "evicting the least recently used idle model (models.max_loaded)");
            if let Some(Slot::Ready(m)) = others.remove(&id) {
                unload(m);
            }
        }
        let need_mb = std::fs::metadata(path.join("model.bin")).map(|m| m.len() >> 20).unwrap_or(0) + self.config.models.min_free_memory_mb;
        if let Some(free_mb) = available_memory_mb() {
            if free_mb < need_mb {
                return Err(DispatchError::ModelBusy {
                    reason: format!("not enough free memory to load the model ({free_mb} MB available, {need_mb} MB needed)"),
                    retry_after_s: RETRY_AFTER_S,
                });
            }
        }
        Ok(())
    }

    /// Pulls (if needed) and loads a model whose slot is `Loading`.
    async fn load(self: &Arc<Self>, id: String, path: PathBuf) -> Result<Lease, DispatchError> {
        let result = self.load_pool(&id, path).await;
        let mut others = self.others();
        let out = match result {
            Ok(model) => {
                others.insert(id, Slot::Ready(model.clone()));
                Ok(self.hand_out(model))
            }
            Err(e) => {
                others.remove(&id);
                Err(e)
            }
        };
        drop(others);
        self.changed.notify_waiters();
        out
    }

    async fn load_pool(&self, id: &str, path: PathBuf) -> Result<Arc<Loaded>, DispatchError> {
        let c = &self.config;
        let failed = |e: String| DispatchError::Unavailable { reason: format!("the model `{id}` cannot be loaded: {e}"), retry_after_s: RETRY_AFTER_S };
        if !models::is_complete(&path) {
            tracing::info!(model = %id, "pulling the model a request named (models.pull_on_demand)");
            models::pull(id, &c.model.model_dir, &models::PullOptions::from_env()).await.map_err(|e| failed(e.to_string()))?;
        }
        let opts = crate::gpu::engine_options(c).map_err(|e| failed(e.to_string()))?;
        let started = Instant::now();
        tracing::info!(model = %id, path = %path.display(), "loading a model on demand");
        let engine = tokio::task::spawn_blocking(move || Engine::load(&path, &opts))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        crate::engine::release_freed_memory();
        let load_s = started.elapsed().as_secs_f64();
        let engine = Arc::new(engine);
        let pool = Pool::start(engine.clone(), c.deployment.num_replicas as usize, PoolLimits::from_config(c), BatchSettings::from_config(c, engine.is_cuda()));
        tracing::info!(model = %id, load_s, "model loaded");
        Ok(Loaded::new(id.to_string(), Arc::new(pool), load_s))
    }

    /// Unloads the idle models past `models.ttl_s`.
    fn reap(&self) {
        let Some(ttl) = self.config.models.ttl() else { return };
        let mut others = self.others();
        let expired: Vec<String> = others
            .iter()
            .filter_map(|(id, s)| match s {
                Slot::Ready(m) if m.idle_for().is_some_and(|idle| idle >= ttl) => Some(id.clone()),
                _ => None,
            })
            .collect();
        for id in expired {
            if let Some(Slot::Ready(m)) = others.remove(&id) {
                tracing::info!(model = %id, ttl_s = ttl.as_secs(), "unloading an idle model (models.ttl_s)");
                unload(m);
            }
        }
    }

    /// `POST /v1/models/{id}/load`.
    pub async fn preload(self: &Arc<Self>, name: &str) -> Result<ModelState, DispatchError> {
        if self.is_default(Some(name)) {
            return Ok(self.states().into_iter().find(|s| s.default).unwrap_or_else(|| self.state_of(&self.default_id, "loading", None)));
        }
        let lease = self.lease(Some(name), || Err(DispatchError::Loading)).await?;
        let id = lease.id().to_string();
        drop(lease);
        Ok(self.states().into_iter().find(|s| s.id == id).unwrap_or_else(|| self.state_of(&id, "available", None)))
    }

    /// `DELETE /v1/models/{id}/load`: 409 while in use or for the default model.
    pub fn unload(&self, name: &str) -> Result<(), DispatchError> {
        if self.is_default(Some(name)) {
            return Err(DispatchError::InUse(format!("`{name}` is the default model (model.size); it stays loaded")));
        }
        let id = models::resolve(name, &self.config.model.model_dir).map(|r| r.id).ok_or_else(|| self.unknown(name))?;
        let mut others = self.others();
        let refusal = match others.get(&id) {
            None => Some(format!("the model `{id}` is not loaded")),
            Some(Slot::Loading) => Some(format!("the model `{id}` is loading")),
            Some(Slot::Ready(m)) if m.idle_for().is_none() => {
                Some(format!("the model `{id}` is in use by {} transcriptions", m.in_use.load(Ordering::SeqCst)))
            }
            Some(Slot::Ready(_)) => None,
        };
        if let Some(r) = refusal {
            return Err(DispatchError::InUse(r));
        }
        if let Some(Slot::Ready(m)) = others.remove(&id) {
            tracing::info!(model = %id, "unloading a model (DELETE /v1/models/{{id}}/load)");
            unload(m);
        }
        Ok(())
    }

    fn state_of(&self, id: &str, state: &'static str, m: Option<&Loaded>) -> ModelState {
        ModelState {
            id: id.to_string(),
            state,
            default: id == self.default_id,
            in_use: m.map(|m| m.in_use.load(Ordering::SeqCst)),
            load_s: m.map(|m| m.load_s),
        }
    }

    /// Every model a request may name: loaded ones, then the folders of
    /// `model.model_dir`, then (with `models.pull_on_demand`) the known
    /// names it would download.
    pub fn states(&self) -> Vec<ModelState> {
        let mut out = Vec::new();
        match self.default.get() {
            Some(m) => out.push(self.state_of(&self.default_id, "loaded", Some(m))),
            None => out.push(self.state_of(&self.default_id, "loading", None)),
        }
        {
            let others = self.others();
            let mut ids: Vec<&String> = others.keys().collect();
            ids.sort();
            for id in ids {
                out.push(match &others[id] {
                    Slot::Ready(m) => self.state_of(id, "loaded", Some(m)),
                    Slot::Loading => self.state_of(id, "loading", None),
                });
            }
        }
        let dir = &self.config.model.model_dir;
        for m in models::list(dir).into_iter().filter(|m| m.complete) {
            if !out.iter().any(|s| s.id == m.name) && models::resolve(&m.name, dir).is_some() {
                out.push(self.state_of(&m.name, "available", None));
            }
        }
        if self.config.models.pull_on_demand {
            for name in crate::config::MODEL_SIZES {
                if let Some(id) = models::canonical_name(name) {
                    if !out.iter().any(|s| s.id == id) {
                        out.push(self.state_of(id, "downloadable", None));
                    }
                }
            }
        }
        out
    }

    /// The names present, for a 404's message.
    fn unknown(&self, name: &str) -> DispatchError {
        let present: Vec<String> = self.states().into_iter().filter(|s| s.state != "downloadable").map(|s| s.id).collect();
        DispatchError::UnknownModel { name: name.chars().take(100).collect(), present }
    }

    /// The on-demand pools, for shutdown.
    pub fn loaded_pools(&self) -> Vec<Arc<Pool>> {
        self.others()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(m) => Some(m.pool.clone()),
                Slot::Loading => None,
            })
            .collect()
    }
}

/// Stops a model's batchers and frees its engine, off the async threads
/// (joining the batchers waits for their last batch).
fn unload(model: Arc<Loaded>) {
    let spawned = std::thread::Builder::new().name("model-unload".into()).spawn(move || {
        model.pool.shutdown();
        drop(model);
        crate::engine::release_freed_memory();
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the thread that unloads a model");
    }
}

/// MemAvailable of /proc/meminfo, in MB; None where it cannot be read.
fn available_memory_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&info)
}

fn parse_mem_available(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_available_memory() {
        let info = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   2048000 kB\n";
        assert_eq!(parse_mem_available(info), Some(2000));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert!(available_memory_mb().is_some_and(|mb| mb > 0));
    }
}
