//! Request rates (a token bucket per key, from `governor`) and daily
//! audio quotas per key, counted on decoded duration.

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
    /// Audio seconds per key on the current UTC day.
    used: Mutex<HashMap<String, (u64, f64)>>,
}

fn utc_day() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
}

impl Limits {
    pub fn new(cfg: &RateLimitConfig) -> Limits {
        let rate = NonZeroU32::new(cfg.requests_per_minute).map(|rpm| {
            let burst = NonZeroU32::new(cfg.burst).unwrap_or(rpm);
            RateLimiter::keyed(Quota::per_minute(rpm).allow_burst(burst))
        });
        Limits { rate, quota_s: cfg.audio_seconds_per_day, used: Mutex::new(HashMap::new()) }
    }

    /// Takes a request from `who`'s bucket; Err(wait) when it is empty.
    pub fn check_rate(&self, who: &str) -> Result<(), Duration> {
        let Some(rate) = &self.rate else { return Ok(()) };
        match rate.check_key(&who.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Err(seconds until the next UTC day) when `who` has used its day's audio.
    pub fn check_quota(&self, who: &str) -> Result<(), Duration> {
        if self.quota_s <= 0.0 {
            return Ok(());
        }
        let today = utc_day();
        let used = self.used.lock().ok().and_then(|u| u.get(who).copied());
        match used {
            Some((day, s)) if day == today && s >= self.quota_s => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                Err(Duration::from_secs((today + 1) * 86_400 - now))
            }
            _ => Ok(()),
        }
    }

    /// Counts `seconds` of decoded audio against `who`'s day.
    pub fn add_audio(&self, who: &str, seconds: f64) {
        if self.quota_s <= 0.0 || !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        let today = utc_day();
        if let Ok(mut u) = self.used.lock() {
            let e = u.entry(who.to_string()).or_insert((today, 0.0));
            if e.0 != today {
                *e = (today, 0.0);
            }
            e.1 += seconds;
        }
    }

    /// Forgets idle buckets, so per-address buckets do not pile up.
    pub fn tidy(&self) {
        if let Some(r) = &self.rate {
            r.retain_recent();
        }
        let today = utc_day();
        if let Ok(mut u) = self.used.lock() {
            u.retain(|_, (day, _)| *day == today);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_the_limit_is_refused_per_key() {
        let l = Limits::new(&RateLimitConfig { requests_per_minute: 60, burst: 3, audio_seconds_per_day: 0.0 });
        for _ in 0..3 {
            assert!(l.check_rate("a").is_ok());
        }
        let wait = l.check_rate("a").expect_err("fourth in a burst of 3");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.check_rate("b").is_ok(), "another key has its own bucket");
    }

    #[test]
    fn the_daily_quota_stops_one_key_only() {
        let l = Limits::new(&RateLimitConfig { requests_per_minute: 0, burst: 0, audio_seconds_per_day: 20.0 });
        assert!(l.check_quota("a").is_ok());
        l.add_audio("a", 11.0);
        assert!(l.check_quota("a").is_ok());
        l.add_audio("a", 11.0);
        let wait = l.check_quota("a").expect_err("over the quota");
        assert!(wait <= Duration::from_secs(86_400));
        assert!(l.check_quota("b").is_ok());
    }

    #[test]
    fn no_limits_configured_means_none_apply() {
        let l = Limits::new(&RateLimitConfig::default());
        for _ in 0..1000 {
            assert!(l.check_rate("a").is_ok());
        }
        l.add_audio("a", 1e9);
        assert!(l.check_quota("a").is_ok());
    }
}
