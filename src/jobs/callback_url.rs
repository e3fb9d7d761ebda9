//! Callbacks never reach inside (SSRF): a `callback_url` whose host is, or
//! resolves to, a loopback, private, link-local or otherwise internal
//! address ([`is_forbidden_ip`]) is refused at submission
//! ([`check_callback_url`]) and again at each delivery attempt by the
//! webhook client's own DNS resolver ([`PinnedResolver`]), so the address
//! checked is the address connected to. `jobs.webhook_allow_hosts`
//! ([`AllowList`]) lets chosen internal receivers through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The longest `callback_url` accepted, in bytes.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;
/// How long the check at submission waits for DNS before refusing.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) const FORBIDDEN_MESSAGE: &str = "invalid callback_url: it points at a loopback, private, link-local \
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
pub(super) enum AllowEntry {
    /// A host name, lowercase, without a trailing dot.
    Host(String),
    /// An address block; a single address is a /32 or /128.
    Net(IpAddr, u8),
}

/// A host name compared the way DNS compares them: any case, trailing
/// dot or not.
pub(super) fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

pub(super) fn parse_allow_entry(entry: &str) -> Result<AllowEntry, String> {
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
pub(super) fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
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
pub(super) fn is_localhost_name(host: &str) -> bool {
    let host = normalize_host(host);
    host == "localhost" || host.ends_with(".localhost")
}

/// The IP address a URL's host is written as, if it is one. The `url`
/// crate has already read every IPv4 spelling (`2130706433`, `0x7f.1`,
/// `0177.0.0.1`, `127.1`) into a dotted quad and never leaves a numeric
/// last label in a domain, so this parse cannot mistake a domain for an
/// address; an IPv6 host is bracketed.
pub(super) fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
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
pub(super) async fn resolve_permitted(host: &str, allow: &AllowList) -> Result<Vec<SocketAddr>, HostRefused> {
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
pub(super) fn permitted(
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
pub(super) struct PinnedResolver {
    pub(super) allow: Arc<AllowList>,
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
pub(super) fn parse_callback_url(url: &str) -> Result<reqwest::Url, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
