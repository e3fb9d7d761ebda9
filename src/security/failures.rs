//! Wrong keys per client address: an address that presents too many is
//! held back (answered 429 before its key is checked) until its bucket
//! refills, so keys cannot be guessed at the speed of the network; and
//! the "authentication failed" line is sampled per address, so a flood of
//! them cannot flood the log.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// One "authentication failed" line per address this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Addresses tracked at once (by the sampler and the hold list); past it,
/// new addresses share one entry, so rotating addresses cannot grow memory.
const MAX_ADDRESSES: usize = 10_000;

pub struct Failures {
    bucket: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses held back, and until when.
    held: Mutex<HashMap<IpAddr, Instant>>,
    log: LogSampler<IpAddr>,
}

impl Failures {
    /// `per_minute` wrong keys per address (as a burst, then refilling
    /// evenly); 0 = no limit.
    pub fn new(per_minute: u32) -> Failures {
        let bucket = NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        Failures { bucket, held: Mutex::new(HashMap::new()), log: LogSampler::new(LOG_EVERY, MAX_ADDRESSES) }
    }

    /// How much longer `client` is held back, if it is.
    pub fn held_back(&self, client: IpAddr) -> Option<Duration> {
        let until = self.held.lock().ok()?.get(&client).copied()?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Counts a wrong key from `client`: Some(wait) when it was one too
    /// many, and the address is now held back for `wait`.
    pub fn wrong_key(&self, client: IpAddr) -> Option<Duration> {
        let bucket = self.bucket.as_ref()?;
        let not_until = bucket.check_key(&client).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        if let Ok(mut held) = self.held.lock() {
            // Full of other addresses: this one is refused now but not
            // remembered; its bucket still refuses its next wrong key.
            if held.len() < MAX_ADDRESSES || held.contains_key(&client) {
                held.insert(client, Instant::now() + wait);
            }
        }
        Some(wait)
    }

    /// Whether to write this "authentication failed" line for `client`:
    /// Some(lines left out since the last one written) or None.
    pub fn log_line(&self, client: Option<IpAddr>) -> Option<u64> {
        self.log.sample(client, Instant::now())
    }

    /// Forgets addresses no longer held back or logged; says how many
    /// lines were left out for the addresses it forgets.
    pub fn tidy(&self) {
        if let Some(b) = &self.bucket {
            b.retain_recent();
        }
        let now = Instant::now();
        if let Ok(mut held) = self.held.lock() {
            held.retain(|_, until| *until > now);
        }
        for (client, left_out) in self.log.tidy(now) {
            let client = client.map_or_else(|| "(other addresses)".to_string(), |c| c.to_string());
            tracing::warn!(client = %client, suppressed = left_out, "authentication failures not logged");
        }
    }
}

/// At most one log line per key every `every`, counting the ones left out.
pub struct LogSampler<K> {
    every: Duration,
    max_keys: usize,
    /// Per key (None: the shared entry once `max_keys` are tracked): when a
    /// line was last written, and how many were left out since.
    seen: Mutex<HashMap<Option<K>, (Instant, u64)>>,
}

impl<K: Hash + Eq + Clone> LogSampler<K> {
    pub fn new(every: Duration, max_keys: usize) -> Self {
        LogSampler { every, max_keys, seen: Mutex::new(HashMap::new()) }
    }

    /// Some(lines left out since the last one) when a line for `key` should
    /// be written at `now`, None when it should be left out.
    pub fn sample(&self, key: Option<K>, now: Instant) -> Option<u64> {
        // A poisoned lock: write the line rather than lose it.
        let Ok(mut seen) = self.seen.lock() else { return Some(0) };
        let key = if key.is_some() && !seen.contains_key(&key) && seen.len() >= self.max_keys { None } else { key };
        match seen.get_mut(&key) {
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
            Some((last, left_out)) if now.saturating_duration_since(*last) >= self.every => {
                let n = *left_out;
                *last = now;
                *left_out = 0;
                Some(n)
            }
            Some((_, left_out)) => {
                *left_out += 1;
                None
            }
        }
    }

    /// Forgets keys with no line for a while; returns those that had lines
    /// left out, with how many.
    pub fn tidy(&self, now: Instant) -> Vec<(Option<K>, u64)> {
        let Ok(mut seen) = self.seen.lock() else { return Vec::new() };
        let mut dropped = Vec::new();
        seen.retain(|k, (last, left_out)| {
            let keep = now.saturating_duration_since(*last) < self.every;
            if !keep && *left_out > 0 {
                dropped.push((k.clone(), *left_out));
            }
            keep
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_writes_one_line_per_key_per_period_and_counts_the_rest() {
        let s = LogSampler::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert_eq!(s.sample(Some("a"), t0), Some(0));
        for i in 1..=5 {
            assert_eq!(s.sample(Some("a"), t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(s.sample(Some("b"), t0 + Duration::from_secs(1)), Some(0), "another key has its own period");
        assert_eq!(s.sample(Some("a"), t0 + Duration::from_secs(10)), Some(5), "the next line says how many were left out");
        assert_eq!(s.sample(Some("a"), t0 + Duration::from_secs(11)), None);
        let dropped = s.tidy(t0 + Duration::from_secs(60));
        assert_eq!(dropped, vec![(Some("a"), 1)]);
        assert_eq!(s.sample(Some("a"), t0 + Duration::from_secs(61)), Some(0), "forgotten keys start afresh");
    }

    #[test]
    fn past_max_keys_new_keys_share_one_entry() {
        let s = LogSampler::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(s.sample(Some(1), t0), Some(0));
        assert_eq!(s.sample(Some(2), t0), Some(0));
        assert_eq!(s.sample(Some(3), t0), Some(0));
        assert_eq!(s.sample(Some(4), t0), None, "3 and 4 share the overflow entry");
        assert_eq!(s.sample(Some(1), t0), None);
    }

    #[test]
    fn too_many_wrong_keys_hold_an_address_back() {
        let f = Failures::new(10);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..10 {
            assert_eq!(f.wrong_key(a), None);
            assert_eq!(f.held_back(a), None);
        }
        let wait = f.wrong_key(a).expect("the 11th wrong key is one too many");
        assert!(wait > Duration::from_secs(4) && wait <= Duration::from_secs(6), "{wait:?}");
        assert!(f.held_back(a).is_some());
        assert_eq!(f.held_back(b), None, "another address is not held back");
        assert_eq!(f.wrong_key(b), None);
    }

    #[test]
    fn zero_means_no_limit() {
        let f = Failures::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..1000 {
            assert_eq!(f.wrong_key(a), None);
        }
        assert_eq!(f.held_back(a), None);
    }
}
