//! Request rates (a token bucket per key, from `governor`) and daily
//! audio quotas per key, counted on decoded duration.
//!
//! The quota is checked and reserved in one step under one lock
//! ([`Limits::reserve`]), so parallel requests cannot all pass a check that
//! only one of them should: a request is let in while the key's audio so
//! far, plus the most every request already in flight could add
//! (`limits.max_audio_seconds` each), is under the quota; a key with
//! nothing in flight is let in while it is under. So a key overshoots its
//! quota by at most one request's audio. An async job holds its place from
//! submission until it finishes ([`Limits::hold_for_job`],
//! [`Limits::job_finished`]), when its audio is counted.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;

pub struct Limits {
    rate: Option<DefaultKeyedRateLimiter<String>>,
    quota_s: f64,
    /// The most audio one request can carry (`limits.max_audio_seconds`).
    max_request_s: f64,
    usage: Mutex<Usage>,
}

#[derive(Default)]
struct Usage {
    /// Per key: the UTC day, audio seconds used that day, requests and
    /// jobs in flight.
    keys: HashMap<String, KeyUsage>,
    /// Jobs holding a place, by job id: whose quota they count against.
    jobs: HashMap<String, String>,
}

#[derive(Clone, Copy, Default)]
struct KeyUsage {
    day: u64,
    used: f64,
    in_flight: u32,
}

/// Why [`Limits::reserve`] refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuotaRefusal {
    /// The day's audio is used: wait this long (until the next UTC day).
    Spent(Duration),
    /// Under the quota, but the requests already in flight could use the
    /// rest: try again when one has finished.
    Busy,
}

/// A place under the quota, taken by [`Limits::reserve`]. Give it back with
/// [`Limits::finish`] (audio known), [`Limits::hold_for_job`], or by
/// dropping it through [`Limits::finish`] with 0 s.
#[derive(Debug)]
#[must_use]
pub struct Reservation {
    who: Option<String>,
}

fn utc_day() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
}

impl Limits {
    pub fn new(cfg: &RateLimitConfig, max_request_s: f64) -> Limits {
        let rate = NonZeroU32::new(cfg.requests_per_minute).map(|rpm| {
            let burst = NonZeroU32::new(cfg.burst).unwrap_or(rpm);
            RateLimiter::keyed(Quota::per_minute(rpm).allow_burst(burst))
        });
        Limits { rate, quota_s: cfg.audio_seconds_per_day, max_request_s, usage: Mutex::new(Usage::default()) }
    }

    fn usage(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks `who`'s quota and takes a place in it (see the module docs).
    pub fn reserve(&self, who: &str) -> Result<Reservation, QuotaRefusal> {
        if self.quota_s <= 0.0 {
            return Ok(Reservation { who: None });
        }
        let today = utc_day();
        let mut u = self.usage();
        let k = u.keys.entry(who.to_string()).or_default();
        if k.day != today {
            *k = KeyUsage { day: today, used: 0.0, in_flight: k.in_flight };
        }
        if k.used >= self.quota_s {
            return Err(QuotaRefusal::Spent(until_tomorrow(today)));
        }
        let worst = k.used + f64::from(k.in_flight) * self.max_request_s;
        if k.in_flight > 0 && worst >= self.quota_s {
            return Err(QuotaRefusal::Busy);
        }
        k.in_flight += 1;
        Ok(Reservation { who: Some(who.to_string()) })
    }

    /// A reserved request ended having used `seconds` of audio (0 when it
    /// failed or used none).
    pub fn finish(&self, r: Reservation, seconds: f64) {
        let Some(who) = r.who else { return };
        let mut u = self.usage();
        release(&mut u, &who, seconds);
    }

    /// A reserved request queued job `job_id`: the place is kept until
    /// [`Self::job_finished`].
    pub fn hold_for_job(&self, r: Reservation, job_id: &str) {
        let Some(who) = r.who else { return };
        self.usage().jobs.insert(job_id.to_string(), who);
    }

    /// Job `job_id` of `owner` reached a final state having used `seconds`
    /// of audio: counted against whoever reserved its place (else
    /// `owner`: a job from before a restart), and its place given back.
    pub fn job_finished(&self, job_id: &str, owner: &str, seconds: f64) {
        if self.quota_s <= 0.0 {
            return;
        }
        let mut u = self.usage();
        match u.jobs.remove(job_id) {
            Some(who) => release(&mut u, &who, seconds),
            None => add(&mut u, owner, seconds),
        }
    }

    /// Whether `who` has used up the day's audio.
    pub fn spent(&self, who: &str) -> bool {
        if self.quota_s <= 0.0 {
            return false;
        }
        let today = utc_day();
        self.usage().keys.get(who).is_some_and(|k| k.day == today && k.used >= self.quota_s)
    }

    /// Counts `seconds` of a live session's audio against `who`, as it is
    /// transcribed; false once the day's quota is used up.
    pub fn charge(&self, who: &str, seconds: f64) -> bool {
        if self.quota_s <= 0.0 {
            return true;
        }
        add(&mut self.usage(), who, seconds);
        !self.spent(who)
    }

    /// Takes a request from `who`'s bucket; Err(wait) when it is empty.
    pub fn check_rate(&self, who: &str) -> Result<(), Duration> {
        let Some(rate) = &self.rate else { return Ok(()) };
        match rate.check_key(&who.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Forgets idle buckets, so per-address buckets do not pile up.
    pub fn tidy(&self) {
        if let Some(r) = &self.rate {
            r.retain_recent();
        }
        let today = utc_day();
        self.usage().keys.retain(|_, k| k.day == today || k.in_flight > 0);
    }
}

fn until_tomorrow(today: u64) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Duration::from_secs(((today + 1) * 86_400).saturating_sub(now).max(1))
}

fn add(u: &mut Usage, who: &str, seconds: f64) {
    let today = utc_day();
    let k = u.keys.entry(who.to_string()).or_default();
    if k.day != today {
        *k = KeyUsage { day: today, used: 0.0, in_flight: k.in_flight };
    }
    if seconds.is_finite() && seconds > 0.0 {
        k.used += seconds;
    }
}

fn release(u: &mut Usage, who: &str, seconds: f64) {
    add(u, who, seconds);
    if let Some(k) = u.keys.get_mut(who) {
        k.in_flight = k.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_the_limit_is_refused_per_key() {
        let l = Limits::new(&RateLimitConfig { requests_per_minute: 60, burst: 3, audio_seconds_per_day: 0.0, ..Default::default() }, 30.0);
        for _ in 0..3 {
            assert!(l.check_rate("a").is_ok());
        }
        let wait = l.check_rate("a").expect_err("fourth in a burst of 3");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.check_rate("b").is_ok(), "another key has its own bucket");
    }

    fn quota(day_s: f64, max_request_s: f64) -> Limits {
        Limits::new(&RateLimitConfig { requests_per_minute: 0, burst: 0, audio_seconds_per_day: day_s, ..Default::default() }, max_request_s)
    }

    #[test]
    fn the_daily_quota_stops_one_key_only() {
        let l = quota(20.0, 15.0);
        let r = l.reserve("a").unwrap();
        l.finish(r, 11.0);
        let r = l.reserve("a").unwrap();
        l.finish(r, 11.0);
        match l.reserve("a") {
            Err(QuotaRefusal::Spent(wait)) => assert!(wait <= Duration::from_secs(86_400)),
            other => panic!("over the quota: {other:?}"),
        }
        let r = l.reserve("b").expect("another key");
        l.finish(r, 0.0);
    }

    #[test]
    fn parallel_requests_overshoot_by_at_most_one_request() {
        // 8 threads race for a 100 s quota with requests of up to 30 s
        // that each use 30 s: whatever the interleaving, the key ends at
        // most one request over.
        let l = std::sync::Arc::new(quota(100.0, 30.0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut done = 0;
                    for _ in 0..50 {
                        if let Ok(r) = l.reserve("k") {
                            std::thread::yield_now();
                            l.finish(r, 30.0);
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        let done: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let used = l.usage().keys["k"].used;
        assert!(used <= 100.0 + 30.0, "used {used} s in {done} requests");
        assert!(used >= 100.0, "the quota can be used up: {used}");
        assert_eq!(l.usage().keys["k"].in_flight, 0);
    }

    #[test]
    fn a_queued_job_holds_its_place_until_it_finishes() {
        let l = quota(100.0, 60.0);
        let r = l.reserve("k").unwrap();
        l.hold_for_job(r, "job-1");
        // One job of up to 60 s in flight, 0 used: one more fits (0 + 60 < 100).
        let r2 = l.reserve("k").unwrap();
        // Two in flight: 0 + 2 x 60 >= 100, so a third must wait.
        assert_eq!(l.reserve("k").unwrap_err(), QuotaRefusal::Busy);
        l.hold_for_job(r2, "job-2");
        l.job_finished("job-1", "k", 70.0);
        l.job_finished("job-2", "k", 40.0);
        assert!(matches!(l.reserve("k"), Err(QuotaRefusal::Spent(_))));
        // A job from before a restart (no place held) still counts.
        l.job_finished("job-old", "other", 100.0);
        assert!(matches!(l.reserve("other"), Err(QuotaRefusal::Spent(_))));
    }

    #[test]
    fn no_limits_configured_means_none_apply() {
        let l = Limits::new(&RateLimitConfig::default(), 30.0);
        for _ in 0..1000 {
            assert!(l.check_rate("a").is_ok());
        }
        let r = l.reserve("a").unwrap();
        l.finish(r, 1e9);
        assert!(l.reserve("a").is_ok());
    }
}
