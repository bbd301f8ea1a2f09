//! Which proxy, if any, a request to the endpoint goes through: the
//! environment variables read the way `requests` reads them.
//!
//! `HTTPS_PROXY` for an `https` endpoint, `HTTP_PROXY` for `http`, else
//! `ALL_PROXY` (lower-case names too, lower case first); `NO_PROXY` lists
//! hosts, domain suffixes, IPv4 networks (`10.0.0.0/8`) or `*` that bypass it.

use std::net::Ipv4Addr;

/// The proxy URL for `url`, given a way to read environment variables.
pub fn proxy_for(url: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let get = |name: &str| {
        env(&name.to_ascii_lowercase())
            .or_else(|| env(name))
            .filter(|v| !v.trim().is_empty())
    };
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host_of(authority);
    if let Some(no_proxy) = get("NO_PROXY") {
        if bypass(&host, &no_proxy) {
            return None;
        }
    }
    let specific = if scheme.eq_ignore_ascii_case("https") {
        get("HTTPS_PROXY")
    } else {
        get("HTTP_PROXY")
    };
    specific.or_else(|| get("ALL_PROXY"))
}

fn host_of(authority: &str) -> String {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

fn bypass(host: &str, no_proxy: &str) -> bool {
    let ip: Option<Ipv4Addr> = host.parse().ok();
    no_proxy.split(',').map(str::trim).any(|entry| {
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/')) {
            return in_network(ip, net, bits);
        }
        let entry = host_of(&entry);
        let suffix = entry.trim_start_matches("*.").trim_start_matches('.');
        host == suffix || host.ends_with(&format!(".{suffix}"))
    })
}

fn in_network(ip: Ipv4Addr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn scheme_picks_the_variable() {
        let env = with(&[("HTTPS_PROXY", "http://s:1"), ("HTTP_PROXY", "http://p:2")]);
        assert_eq!(
            proxy_for("https://logs.example/x", &env).as_deref(),
            Some("http://s:1")
        );
        assert_eq!(
            proxy_for("http://logs.example/x", &env).as_deref(),
            Some("http://p:2")
        );
        let env = with(&[
            ("ALL_PROXY", "http://a:3"),
            ("https_proxy", "http://lower:4"),
        ]);
        assert_eq!(proxy_for("http://h/x", &env).as_deref(), Some("http://a:3"));
        assert_eq!(
            proxy_for("https://h/x", &env).as_deref(),
            Some("http://lower:4")
        );
        assert_eq!(proxy_for("https://h/x", with(&[])), None);
    }

    #[test]
    fn no_proxy_matches_hosts_suffixes_networks_and_star() {
        let base = [("HTTP_PROXY", "http://p:1")];
        let case = |no: &str, url: &str| {
            let mut v = base.to_vec();
            v.push(("NO_PROXY", no));
            proxy_for(url, with(&v)).is_none()
        };
        assert!(case(
            "localhost,127.0.0.1",
            "http://127.0.0.1:8765/sources/a/frames"
        ));
        assert!(case(".example.com", "http://logs.example.com/x"));
        assert!(case("example.com", "http://logs.example.com:443/x"));
        assert!(!case("example.com", "http://notexample.com/x"));
        assert!(case("10.0.0.0/8", "http://10.1.2.3/x"));
        assert!(!case("10.0.0.0/8", "http://11.1.2.3/x"));
        assert!(case("*", "http://anything/x"));
        assert!(!case("", "http://anything/x"));
        assert!(case("user.host", "http://u:p@user.host:1/x"));
    }
}
