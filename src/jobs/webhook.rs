//! Job callbacks: when a job ends (completed or failed; a cancelled job
//! gets none), the server POSTs the job's public JSON to the job's
//! `callback_url`.
//!
//! Signatures follow Stripe's scheme. Each attempt carries
//! [`TIMESTAMP_HEADER`] (unix seconds) and, when `jobs.webhook_secret` is
//! set, [`SIGNATURE_HEADER`]: `sha256=<hex HMAC-SHA256(secret, timestamp +
//! "." + body)>`. A receiver recomputes it ([`verify`]) and rejects requests
//! whose timestamp is too old, which stops replays. [`JOB_ID_HEADER`] names
//! the job.
//!
//! Delivery ([`WebhookSender::deliver`]) succeeds on any 2xx. Connection
//! errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
//! (1 s, 2 s, 4 s, ... at most 60 s; a `Retry-After` in seconds wins, also
//! at most 60 s) up to `jobs.webhook_max_attempts` attempts; any other
//! answer is final. Redirects are not followed (a redirected POST would
//! lose its body), so a 3xx is final too.
//!
//! Callbacks never reach inside (SSRF): a `callback_url` whose host is, or
//! resolves to, a loopback, private, link-local or otherwise internal
//! address ([`is_forbidden_ip`]) is refused at submission
//! ([`check_callback_url`]) and again at each delivery attempt, by the
//! client's own DNS resolver, so the address checked is the address
//! connected to. `jobs.webhook_allow_hosts` ([`AllowList`]) lets chosen
//! internal receivers through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>`;
/// sent only when a secret is configured.
pub const SIGNATURE_HEADER: &str = "X-Whisper-Signature";
/// Unix seconds when the attempt was sent; part of the signed text.
pub const TIMESTAMP_HEADER: &str = "X-Whisper-Timestamp";
/// The job's id.
pub const JOB_ID_HEADER: &str = "X-Whisper-Job-Id";

/// The prefix of [`SIGNATURE_HEADER`]'s value.
const SCHEME: &str = "sha256=";
/// The longest wait between attempts, `Retry-After` included.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The first wait between attempts; it doubles after each.
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("{SCHEME}{}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Whether `header_value` is the signature of `body` sent at `timestamp`
/// (compared in constant time). Checking that `timestamp` is recent is the
/// caller's business.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header_value: &str) -> bool {
    let Some(hex_sig) = header_value.trim().strip_prefix(SCHEME) else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

/// The longest `callback_url` accepted, in bytes.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;
/// How long the check at submission waits for DNS before refusing.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

const FORBIDDEN_MESSAGE: &str = "invalid callback_url: it points at a loopback, private, link-local \
     or otherwise internal address (allow it with jobs.webhook_allow_hosts)";

/// Whether a callback must not be sent to `ip`: loopback, private,
/// link-local, unspecified, multicast, broadcast, CGNAT, reserved and
/// documentation ranges, and the IPv6 forms that embed such an IPv4
/// address (mapped, compatible, NAT64, 6to4).
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // 0.0.0.0/8, the unspecified address included
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10, CGNAT
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && (c == 0 || c == 2)) // IETF protocol assignments, TEST-NET-1
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let low_v4 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-mapped (::ffff:a.b.c.d) and SIIT-translated (::ffff:0:a.b.c.d):
    // the socket layer connects to the IPv4 address itself.
    if s[..4] == [0; 4] && ((s[4] == 0 && s[5] == 0xffff) || (s[4] == 0xffff && s[5] == 0)) {
        return is_forbidden_v4(low_v4());
    }
    // ::/96 holds ::, ::1 and the deprecated IPv4-compatible form; no
    // legitimate receiver lives there, so the whole block is refused.
    if s[..6] == [0; 6] {
        return true;
    }
    // NAT64 (64:ff9b::/96): the gateway forwards to the embedded address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return is_forbidden_v4(low_v4());
    }
    // 6to4 (2002::/16): a relay forwards to the embedded address.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return is_forbidden_v4(v4);
    }
    (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // 64:ff9b:1::/48, local-use NAT64
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: its embedded address is obfuscated
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0 // 3fff::/20, documentation
        || (s[0] == 0x100 && s[1..4] == [0; 3]) // 100::/64, discard-only
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10, deprecated site-local
        || (s[0] & 0xff00) == 0xff00 // multicast
}

/// One `jobs.webhook_allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowEntry {
    /// A host name, lowercase, without a trailing dot.
    Host(String),
    /// An address block; a single address is a /32 or /128.
    Net(IpAddr, u8),
}

/// A host name compared the way DNS compares them: any case, trailing
/// dot or not.
fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn parse_allow_entry(entry: &str) -> Result<AllowEntry, String> {
    let entry = entry.trim();
    let unbracketed = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(net_entry(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    if let Some((addr, len)) = entry.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{entry:?}: `{addr}` is not an IP address (expected a CIDR such as 10.0.0.0/8)"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{entry:?}: prefix length must be 0-{max}"))?;
        return Ok(net_entry(ip, len));
    }
    let host = normalize_host(entry);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // A numeric last label would make the URL parser read the host as an
    // IPv4 address, so such an entry could never match a host name.
    let numeric_tail = host.rsplit('.').next().is_some_and(|l| {
        l.bytes().all(|b| b.is_ascii_digit())
            || l.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if host.is_empty() || host.len() > 253 || numeric_tail || !host.split('.').all(label_ok) {
        return Err(format!(
            "{entry:?} is not a host name, an IP address or a CIDR (such as 10.0.0.0/8)"
        ));
    }
    Ok(AllowEntry::Host(host))
}

/// Whether `ip` lies in `net`/`len`. IPv4-mapped IPv6 addresses count as
/// their IPv4 address, so `127.0.0.0/8` also covers `::ffff:127.0.0.1`
/// (entries were brought to that form by [`net_entry`]).
fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip.to_canonical(), net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// An address block entry; one inside `::ffff:0:0/96` becomes the IPv4
/// block it maps, to match addresses the way [`in_net`] sees them.
fn net_entry(ip: IpAddr, len: u8) -> AllowEntry {
    if let IpAddr::V6(v6) = ip {
        if let (Some(v4), true) = (v6.to_ipv4_mapped(), len >= 96) {
            return AllowEntry::Net(IpAddr::V4(v4), len - 96);
        }
    }
    AllowEntry::Net(ip, len)
}

/// `jobs.webhook_allow_hosts`: the internal receivers an operator lets
/// callbacks reach on purpose. A host entry matches the callback URL's
/// host name as written (before DNS); an address or CIDR entry matches
/// every address the callback would connect to.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

impl AllowList {
    /// Parses the entries: host names, IP addresses and CIDRs
    /// (`10.0.0.0/8`, `fd00::/8`). The error names the first bad entry.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let entries =
            entries.iter().map(|e| parse_allow_entry(e.as_ref())).collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Checks one entry, for config validation.
    pub fn check_entry(entry: &str) -> Result<(), String> {
        parse_allow_entry(entry).map(|_| ())
    }

    /// Whether the host name `host` is let through as it is.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.entries.iter().any(|e| matches!(e, AllowEntry::Host(h) if *h == host))
    }

    /// Whether `ip` lies in an allowed address or CIDR.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| matches!(e, AllowEntry::Net(net, len) if in_net(ip, *net, *len)))
    }

    /// Whether a callback may connect to `ip`.
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        self.allows_ip(ip) || !is_forbidden_ip(ip)
    }
}

/// Why a callback's host was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostRefused {
    #[error("{FORBIDDEN_MESSAGE}")]
    Forbidden,
    #[error("invalid callback_url: cannot resolve host {0}")]
    Unresolvable(String),
}

/// `localhost` and its subdomains always mean this machine (RFC 6761),
/// whatever a resolver says about them.
fn is_localhost_name(host: &str) -> bool {
    let host = normalize_host(host);
    host == "localhost" || host.ends_with(".localhost")
}

/// The IP address a URL's host is written as, if it is one. The `url`
/// crate has already read every IPv4 spelling (`2130706433`, `0x7f.1`,
/// `0177.0.0.1`, `127.1`) into a dotted quad and never leaves a numeric
/// last label in a domain, so this parse cannot mistake a domain for an
/// address; an IPv6 host is bracketed.
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Resolves a host name and returns its addresses only if a callback may
/// connect to every one of them. Any forbidden address refuses the whole
/// name, rather than dropping it and keeping the rest: a name that mixes
/// public and internal addresses is either misconfigured or built to
/// probe, and a receiver that is only sometimes reachable hides the
/// problem instead of reporting it.
async fn resolve_permitted(host: &str, allow: &AllowList) -> Result<Vec<SocketAddr>, HostRefused> {
    let allowed_name = allow.allows_host(host);
    if !allowed_name && is_localhost_name(host) {
        return Err(HostRefused::Forbidden);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| HostRefused::Unresolvable(host.to_string()))?
        .collect();
    permitted(host, addrs, allow)
}

/// The verdict on `host`'s resolved `addrs` (see [`resolve_permitted`]).
fn permitted(
    host: &str,
    addrs: Vec<SocketAddr>,
    allow: &AllowList,
) -> Result<Vec<SocketAddr>, HostRefused> {
    if addrs.is_empty() {
        return Err(HostRefused::Unresolvable(host.to_string()));
    }
    if !allow.allows_host(host) && addrs.iter().any(|a| !allow.permits_ip(a.ip())) {
        return Err(HostRefused::Forbidden);
    }
    Ok(addrs)
}

/// The DNS resolver of the webhook client: it checks the very addresses
/// the connection will use, at every attempt, so a name cannot pass the
/// check at submission and then be re-pointed (DNS rebinding) at an
/// internal address before or between deliveries.
struct PinnedResolver {
    allow: Arc<AllowList>,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.allow);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_permitted(&host, &allow)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The syntax checks, without DNS: an absolute http or https URL with a
/// host, at most [`MAX_CALLBACK_URL_LEN`] bytes.
fn parse_callback_url(url: &str) -> Result<reqwest::Url, String> {
    let url = url.trim();
    if url.len() > MAX_CALLBACK_URL_LEN {
        return Err(format!("invalid callback_url: longer than {MAX_CALLBACK_URL_LEN} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid callback_url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "invalid callback_url: scheme '{}' is not supported (expected http or https)",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("invalid callback_url: no host".to_string());
    }
    Ok(parsed)
}

/// Checks a `callback_url` at submission: an absolute http or https URL
/// with a host, at most [`MAX_CALLBACK_URL_LEN`] bytes, whose host is not
/// and does not resolve to an internal address (see [`is_forbidden_ip`])
/// unless `allow` lets it through. The error is a message for a 400
/// answer. Delivery checks again ([`WebhookSender`]): DNS may change.
pub async fn check_callback_url(url: &str, allow: &AllowList) -> Result<reqwest::Url, String> {
    let parsed = parse_callback_url(url)?;
    if let Some(ip) = literal_ip(&parsed) {
        return if allow.permits_ip(ip) { Ok(parsed) } else { Err(FORBIDDEN_MESSAGE.to_string()) };
    }
    let host = parsed.host_str().unwrap_or_default().to_string();
    match tokio::time::timeout(RESOLVE_TIMEOUT, resolve_permitted(&host, allow)).await {
        Ok(Ok(_)) => Ok(parsed),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(HostRefused::Unresolvable(host).to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    BadUrl(String),
    #[error("could not build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("jobs.webhook_allow_hosts: {0}")]
    AllowList(String),
    /// The host resolved to an address callbacks may not reach; final,
    /// since retrying would only ask the same DNS again.
    #[error("{reason}")]
    Refused { reason: String, attempts: u32 },
    /// An answer that retrying will not change (4xx other than 408/429, 3xx).
    #[error("callback answered HTTP {status} (attempt {attempts}); not retried")]
    Rejected { status: u16, attempts: u32 },
    /// Every attempt failed with something worth retrying.
    #[error("callback failed after {attempts} attempts; last: {last}")]
    Exhausted { attempts: u32, last: String },
}

impl WebhookError {
    /// Attempts made before giving up (0: none could be made).
    pub fn attempts(&self) -> u32 {
        match self {
            WebhookError::BadUrl(_) | WebhookError::Client(_) | WebhookError::AllowList(_) => 0,
            WebhookError::Rejected { attempts, .. }
            | WebhookError::Exhausted { attempts, .. }
            | WebhookError::Refused { attempts, .. } => *attempts,
        }
    }
}

/// Whether an answer with this status is worth another attempt.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), at most
/// [`MAX_BACKOFF`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_BACKOFF))
}

/// The wait after failed attempt `attempt` (1-based): `base`, doubling,
/// at most [`MAX_BACKOFF`].
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF)
}

fn unix_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The resolver's refusal, if that is what made `err`: reqwest and hyper
/// wrap it a few layers deep.
fn refusal(err: &reqwest::Error) -> Option<&HostRefused> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<HostRefused>() {
            return Some(r);
        }
        source = e.source();
    }
    None
}

/// Sends job callbacks. Share one through an `Arc`.
pub struct WebhookSender {
    client: reqwest::Client,
    allow: Arc<AllowList>,
    secret: Option<Vec<u8>>,
    max_attempts: u32,
    timeout: Duration,
    base_backoff: Duration,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("WebhookSender")
            .field("signed", &self.secret.is_some())
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .field("base_backoff", &self.base_backoff)
            .finish()
    }
}

impl WebhookSender {
    /// `secret`: the HMAC key (`jobs.webhook_secret`; None or empty: no
    /// signature). `max_attempts`: at least 1. `timeout`: for each POST,
    /// connecting included. `allow_hosts`: `jobs.webhook_allow_hosts`, the
    /// internal receivers callbacks may reach.
    pub fn new(
        secret: Option<String>,
        max_attempts: u32,
        timeout: Duration,
        allow_hosts: &[String],
    ) -> Result<Self, WebhookError> {
        let allow = Arc::new(AllowList::new(allow_hosts).map_err(WebhookError::AllowList)?);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PinnedResolver { allow: Arc::clone(&allow) }))
            // Through a proxy the proxy resolves the callback's host, out of
            // the resolver's sight, and the resolver would judge the
            // proxy's (usually internal) address instead.
            .no_proxy()
            .user_agent(concat!("whisper-serve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError::Client)?;
        Ok(Self {
            client,
            allow,
            secret: secret.filter(|s| !s.is_empty()).map(String::into_bytes),
            max_attempts: max_attempts.max(1),
            timeout,
            base_backoff: BASE_BACKOFF,
        })
    }

    /// Sets the first wait between attempts (default [`BASE_BACKOFF`]);
    /// for tests.
    pub fn with_base_backoff(mut self, base: Duration) -> Self {
        self.base_backoff = base;
        self
    }

    /// Whether callbacks carry [`SIGNATURE_HEADER`].
    pub fn is_signed(&self) -> bool {
        self.secret.is_some()
    }

    /// POSTs `body` (the job's public JSON) to `url`, retrying as the
    /// module docs say. Returns the attempts it took.
    pub async fn deliver(
        &self,
        url: &str,
        job_id: &str,
        body: Vec<u8>,
    ) -> Result<u32, WebhookError> {
        let url = parse_callback_url(url).map_err(WebhookError::BadUrl)?;
        // reqwest calls no resolver for a host written as an address.
        let literal = literal_ip(&url);
        let body = bytes::Bytes::from(body);
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            if literal.is_some_and(|ip| !self.allow.permits_ip(ip)) {
                return Err(WebhookError::Refused {
                    reason: FORBIDDEN_MESSAGE.to_string(),
                    attempts: attempt - 1,
                });
            }
            let timestamp = unix_seconds();
            let mut req = self
                .client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(JOB_ID_HEADER, job_id)
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .body(body.clone());
            if let Some(secret) = &self.secret {
                req = req.header(SIGNATURE_HEADER, sign(secret, timestamp, &body));
            }
            let wait = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(attempt),
                Ok(resp) => {
                    let status = resp.status();
                    tracing::warn!(
                        job_id,
                        attempt,
                        status = status.as_u16(),
                        "webhook delivery failed: callback answered HTTP {status}"
                    );
                    if !retryable(status) {
                        return Err(WebhookError::Rejected {
                            status: status.as_u16(),
                            attempts: attempt,
                        });
                    }
                    last = format!("HTTP {status}");
                    retry_after(resp.headers())
                        .unwrap_or_else(|| backoff(self.base_backoff, attempt))
                }
                Err(e) => {
                    // Without the URL: it may carry a token in its query.
                    let e = e.without_url();
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect"
                    } else {
                        "transport"
                    };
                    tracing::warn!(job_id, attempt, kind, error = %e, "webhook delivery failed");
                    if let Some(HostRefused::Forbidden) = refusal(&e) {
                        return Err(WebhookError::Refused {
                            reason: FORBIDDEN_MESSAGE.to_string(),
                            attempts: attempt - 1,
                        });
                    }
                    if e.is_builder() {
                        return Err(WebhookError::Exhausted {
                            attempts: attempt,
                            last: e.to_string(),
                        });
                    }
                    last = format!("{kind} error: {e}");
                    backoff(self.base_backoff, attempt)
                }
            };
            if attempt < self.max_attempts {
                tokio::time::sleep(wait).await;
            }
        }
        Err(WebhookError::Exhausted { attempts: self.max_attempts, last })
    }

    /// [`deliver`](Self::deliver) in a tokio task that logs the outcome.
    pub fn spawn_deliver(
        self: &Arc<Self>,
        url: String,
        job_id: String,
        body: Vec<u8>,
    ) -> tokio::task::JoinHandle<()> {
        let sender = Arc::clone(self);
        tokio::spawn(async move {
            match sender.deliver(&url, &job_id, body).await {
                Ok(attempts) => tracing::info!(job_id, attempts, "webhook delivered"),
                Err(e) => tracing::warn!(
                    job_id,
                    attempts = e.attempts(),
                    error = %e,
                    "webhook delivery gave up"
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::Router;

    const SECRET: &[u8] = b"secret";

    #[test]
    fn known_answer() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'secret',
        //   b'1700000000.{\"id\":\"job\"}', hashlib.sha256).hexdigest())"
        // and `openssl dgst -sha256 -hmac secret` agree.
        let sig = sign(b"secret", 1_700_000_000, br#"{"id":"job"}"#);
        assert_eq!(sig, "sha256=5a546632c0adb069fe771a1dfe22f728679b197c070b1c195f19b375fbc59e77");
        // Empty body, another key.
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, b""),
            "sha256=5967f3c560522fa40cf2876ebc3c3a08551dd6959aaade3b413460591895bdcc"
        );
    }

    #[test]
    fn sign_verify_roundtrip_and_rejections() {
        let body = br#"{"id":"0190","status":"completed"}"#;
        let ts = 1_700_000_123;
        let sig = sign(SECRET, ts, body);
        assert!(verify(SECRET, ts, body, &sig));
        assert!(!verify(SECRET, ts, br#"{"id":"0190","status":"failed"}"#, &sig));
        assert!(!verify(SECRET, ts + 1, body, &sig));
        assert!(!verify(b"other", ts, body, &sig));
        assert!(!verify(SECRET, ts, body, sig.trim_start_matches("sha256=")));
        assert!(!verify(SECRET, ts, body, "sha256=zz"));
        assert!(!verify(SECRET, ts, body, "sha256="));
        assert!(!verify(SECRET, ts, body, &sig[..sig.len() - 2]));
        assert!(!verify(SECRET, ts, body, ""));
    }

    #[test]
    fn callback_url_syntax() {
        assert!(parse_callback_url("https://example.com/hook?x=1").is_ok());
        assert!(parse_callback_url("http://127.0.0.1:8080/").is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_CALLBACK_URL_LEN));
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://",
            "mailto:a@b.c",
            long.as_str(),
        ] {
            assert!(parse_callback_url(bad).is_err(), "{bad}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forbidden_ranges() {
        for bad in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:0:127.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ] {
            assert!(is_forbidden_ip(ip(bad)), "{bad} should be forbidden");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
        ] {
            assert!(!is_forbidden_ip(ip(good)), "{good} should be allowed");
        }
    }

    #[test]
    fn allow_list_entries() {
        for ok in ["hooks.internal", "Hooks.Internal.", "127.0.0.1", "::1", "[::1]", "10.0.0.0/8", "fd00::/8", "0.0.0.0/0", "a_b.example"] {
            assert!(AllowList::check_entry(ok).is_ok(), "{ok}");
        }
        for bad in ["", " ", "http://x/", "10.0.0.0/33", "fd00::/129", "10.0.0/8", "x/8", "host:80", "a..b", "-a.b", "user@host", "10.1", "a.0x7f", "10.0.0.0/"] {
            assert!(AllowList::check_entry(bad).is_err(), "{bad}");
        }
        let allow = AllowList::new(&["Hooks.Internal.", "10.0.0.0/8", "127.0.0.1", "fd00::/8", "::ffff:192.168.0.0/112"]).unwrap();
        assert!(allow.allows_host("hooks.internal"));
        assert!(allow.allows_host("HOOKS.internal."));
        assert!(!allow.allows_host("other.internal"));
        assert!(!allow.allows_host("x.hooks.internal"));
        assert!(allow.permits_ip(ip("10.9.8.7")));
        assert!(allow.permits_ip(ip("::ffff:10.9.8.7")));
        assert!(allow.permits_ip(ip("127.0.0.1")));
        assert!(!allow.permits_ip(ip("127.0.0.2")));
        assert!(allow.permits_ip(ip("fd00::5")));
        assert!(!allow.permits_ip(ip("fc00::5")));
        assert!(allow.permits_ip(ip("192.168.3.4")));
        assert!(!allow.permits_ip(ip("169.254.169.254")));
        assert!(allow.permits_ip(ip("8.8.8.8")));
        assert!(AllowList::default().permits_ip(ip("8.8.8.8")));
        assert!(!AllowList::default().permits_ip(ip("::1")));
        assert!(AllowList::new(&["0.0.0.0/0"]).unwrap().permits_ip(ip("127.0.0.1")));
    }

    /// Every spelling of an internal address is refused before any DNS.
    #[tokio::test]
    async fn internal_callback_urls_are_refused() {
        let none = AllowList::default();
        for bad in [
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/hook",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://0.0.0.0/",
            "http://0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://192.168.0.1/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "https://user:pass@127.0.0.1/",
            "http://example.com@127.0.0.1/",
        ] {
            let err = check_callback_url(bad, &none).await.expect_err(bad);
            assert!(err.contains("internal address"), "{bad}: {err}");
        }
        let err = check_callback_url("http://no-such-host.invalid/", &none).await.unwrap_err();
        assert!(err.contains("cannot resolve"), "{err}");
        // Allowed on purpose.
        let allow = AllowList::new(&["127.0.0.1"]).unwrap();
        assert!(check_callback_url("http://127.0.0.1:9/hook", &allow).await.is_ok());
        assert!(check_callback_url("http://[::ffff:127.0.0.1]:9/hook", &allow).await.is_ok());
        assert!(check_callback_url("http://127.0.0.2:9/hook", &allow).await.is_err());
        let allow = AllowList::new(&["127.0.0.0/8"]).unwrap();
        assert!(check_callback_url("http://2130706433/", &allow).await.is_ok());
        let allow = AllowList::new(&["LocalHost."]).unwrap();
        assert!(check_callback_url("http://LOCALHOST/", &allow).await.is_ok());
        assert!(check_callback_url("https://8.8.8.8/", &none).await.is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let b = |n| backoff(BASE_BACKOFF, n).as_secs();
        assert_eq!(
            [b(1), b(2), b(3), b(4), b(6), b(7), b(20), b(100)],
            [1, 2, 4, 8, 32, 60, 60, 60]
        );
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_BACKOFF));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::REQUEST_TIMEOUT));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::NOT_FOUND));
        assert!(!retryable(StatusCode::MOVED_PERMANENTLY));
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = WebhookSender::new(Some("hunter2".into()), 3, Duration::from_secs(1), &[]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.is_signed());
        let s = WebhookSender::new(Some(String::new()), 0, Duration::from_secs(1), &[]).unwrap();
        assert!(!s.is_signed());
        assert_eq!(s.max_attempts, 1);
    }

    /// What the receiver saw on each request.
    #[derive(Debug, Clone)]
    struct Seen {
        signature: Option<String>,
        verified: bool,
        job_id: Option<String>,
        content_type: Option<String>,
        body: Vec<u8>,
    }

    #[derive(Clone)]
    struct Receiver {
        /// The answers to give, in order; the last one repeats.
        answers: Arc<Vec<(u16, Option<&'static str>)>>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    async fn hook(
        State(r): State<Receiver>,
        headers: AxumHeaders,
        body: bytes::Bytes,
    ) -> impl IntoResponse {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let signature = h(SIGNATURE_HEADER);
        let verified = match (&signature, h(TIMESTAMP_HEADER).and_then(|t| t.parse::<i64>().ok())) {
            (Some(sig), Some(ts)) => verify(SECRET, ts, &body, sig),
            _ => false,
        };
        let n = {
            let mut seen = r.seen.lock().unwrap();
            seen.push(Seen {
                signature,
                verified,
                job_id: h(JOB_ID_HEADER),
                content_type: h("content-type"),
                body: body.to_vec(),
            });
            seen.len()
        };
        let (code, retry_after) = r.answers[(n - 1).min(r.answers.len() - 1)];
        let mut out = AxumHeaders::new();
        if let Some(ra) = retry_after {
            out.insert("retry-after", ra.parse().unwrap());
        }
        (AxumStatus::from_u16(code).unwrap(), out, "")
    }

    /// A local receiver at `http://127.0.0.1:<port>/hook`.
    async fn receiver(
        answers: Vec<(u16, Option<&'static str>)>,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Receiver { answers: Arc::new(answers), seen: seen.clone() };
        let app = Router::new().route("/hook", post(hook)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/hook"), seen)
    }

    /// The receivers listen on 127.0.0.1, which only an allow-list lets
    /// callbacks reach.
    fn local_allowed() -> Vec<String> {
        vec!["127.0.0.1".to_string()]
    }

    fn sender(secret: Option<&str>, max_attempts: u32) -> WebhookSender {
        WebhookSender::new(
            secret.map(str::to_string),
            max_attempts,
            Duration::from_secs(5),
            &local_allowed(),
        )
        .unwrap()
        .with_base_backoff(Duration::from_millis(10))
    }

    const JOB: &str = "01900000-0000-7000-8000-000000000000";

    #[tokio::test]
    async fn retries_a_503_then_succeeds_signed() {
        let (url, seen) = receiver(vec![(503, None), (200, None)]).await;
        let body =
            br#"{"id":"01900000-0000-7000-8000-000000000000","status":"completed"}"#.to_vec();
        let attempts = sender(Some("secret"), 5).deliver(&url, JOB, body.clone()).await.unwrap();
        assert_eq!(attempts, 2);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        for s in &seen {
            assert!(s.verified, "receiver could not verify {:?}", s.signature);
            assert_eq!(s.job_id.as_deref(), Some(JOB));
            assert_eq!(s.content_type.as_deref(), Some("application/json"));
            assert_eq!(s.body, body);
        }
    }

    #[tokio::test]
    async fn a_400_is_final_after_one_attempt() {
        let (url, seen) = receiver(vec![(400, None), (200, None)]).await;
        let err = sender(Some("secret"), 5).deliver(&url, JOB, b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(err, WebhookError::Rejected { status: 400, attempts: 1 }), "{err:?}");
        assert_eq!(err.attempts(), 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unsigned_without_secret_and_429_honours_retry_after() {
        let (url, seen) = receiver(vec![(429, Some("0")), (408, None), (204, None)]).await;
        let attempts = sender(None, 5).deliver(&url, JOB, b"{}".to_vec()).await.unwrap();
        assert_eq!(attempts, 3);
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|s| s.signature.is_none() && !s.verified));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let (url, seen) = receiver(vec![(500, None)]).await;
        let err = sender(Some("secret"), 3).deliver(&url, JOB, b"{}".to_vec()).await.unwrap_err();
        assert!(
            matches!(&err, WebhookError::Exhausted { attempts: 3, last } if last.contains("500")),
            "{err:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn connection_refused_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = sender(None, 2)
            .deliver(&format!("http://{addr}/hook"), JOB, b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(err, WebhookError::Exhausted { attempts: 2, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out_and_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let s = WebhookSender::new(None, 2, Duration::from_millis(200), &local_allowed())
            .unwrap()
            .with_base_backoff(Duration::from_millis(10));
        let err = s.deliver(&format!("http://{addr}/hook"), JOB, b"{}".to_vec()).await.unwrap_err();
        assert!(
            matches!(&err, WebhookError::Exhausted { attempts: 2, last } if last.starts_with("timeout")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn bad_url_is_refused_without_a_request() {
        let err = sender(None, 3).deliver("ftp://example.com/", JOB, Vec::new()).await.unwrap_err();
        assert!(matches!(err, WebhookError::BadUrl(_)));
        assert_eq!(err.attempts(), 0);
    }

    #[tokio::test]
    async fn a_bad_allow_list_is_refused() {
        let err = WebhookSender::new(None, 1, Duration::from_secs(1), &["10.0.0.0/40".into()])
            .unwrap_err();
        assert!(matches!(err, WebhookError::AllowList(_)), "{err:?}");
    }

    /// The check at delivery: a name that resolves to loopback, or a
    /// loopback literal, gets no request, and is not retried.
    #[tokio::test]
    async fn delivery_refuses_internal_addresses() {
        let (url, seen) = receiver(vec![(200, None)]).await;
        let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_string();
        let strict = WebhookSender::new(None, 3, Duration::from_secs(5), &[])
            .unwrap()
            .with_base_backoff(Duration::from_millis(10));
        for target in [
            format!("http://localhost:{port}/hook"),
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://2130706433:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        ] {
            let err = strict.deliver(&target, JOB, b"{}".to_vec()).await.unwrap_err();
            assert!(matches!(err, WebhookError::Refused { attempts: 0, .. }), "{target}: {err:?}");
            assert_eq!(err.attempts(), 0);
        }
        assert!(seen.lock().unwrap().is_empty(), "a request reached the receiver");
    }

    /// The resolver itself, as reqwest calls it: a name is checked on
    /// every address it resolves to.
    #[tokio::test]
    async fn the_pinned_resolver_filters_names() {
        use reqwest::dns::Resolve;
        let resolver = PinnedResolver { allow: Arc::new(AllowList::default()) };
        let err = resolver.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        assert!(matches!(err.downcast_ref::<HostRefused>(), Some(HostRefused::Forbidden)), "{err}");
        let resolver = PinnedResolver { allow: Arc::new(AllowList::new(&["localhost"]).unwrap()) };
        let addrs: Vec<_> = resolver.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!addrs.is_empty());
    }

    #[test]
    fn one_forbidden_address_refuses_the_name() {
        let sock = |s: &str| SocketAddr::new(ip(s), 0);
        let none = AllowList::default();
        assert!(permitted("h", vec![sock("8.8.8.8"), sock("2606:4700::1")], &none).is_ok());
        for addrs in [
            vec![sock("8.8.8.8"), sock("127.0.0.1")],
            vec![sock("10.0.0.1")],
            vec![sock("8.8.8.8"), sock("::1")],
            vec![sock("169.254.169.254")],
        ] {
            assert!(matches!(permitted("h", addrs, &none), Err(HostRefused::Forbidden)));
        }
        assert!(matches!(permitted("h", vec![], &none), Err(HostRefused::Unresolvable(_))));
        let allow = AllowList::new(&["10.0.0.0/8"]).unwrap();
        assert!(permitted("h", vec![sock("10.0.0.1"), sock("8.8.8.8")], &allow).is_ok());
        assert!(permitted("h", vec![sock("10.0.0.1"), sock("192.168.0.1")], &allow).is_err());
        let by_name = AllowList::new(&["h"]).unwrap();
        assert!(permitted("H.", vec![sock("192.168.0.1")], &by_name).is_ok());
    }

    #[tokio::test]
    async fn an_allowed_name_is_delivered_to() {
        let (url, seen) = receiver(vec![(200, None)]).await;
        let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_string();
        let s = WebhookSender::new(None, 1, Duration::from_secs(5), &["localhost".into()]).unwrap();
        // `localhost` may resolve to ::1 first, where nothing listens; the
        // client then falls back to 127.0.0.1.
        let attempts = s.deliver(&format!("http://localhost:{port}/hook"), JOB, b"{}".to_vec()).await.unwrap();
        assert_eq!(attempts, 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn spawn_deliver_runs_in_the_background() {
        let (url, seen) = receiver(vec![(200, None)]).await;
        let s = Arc::new(sender(Some("secret"), 2));
        s.spawn_deliver(url, JOB.to_string(), b"{}".to_vec()).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].verified);
    }
}
