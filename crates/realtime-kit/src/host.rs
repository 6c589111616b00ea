//! Which `Host` names the server answers: IP literals, `localhost`, and the names it is given.
//!
//! Why: DNS rebinding. A page on `http://evil.example:3001` can make its own name resolve to
//! 127.0.0.1 a moment after it loaded. From then on the browser sends that page's requests to a
//! demo on this machine, and treats the answers as the page's own: same origin, so it may read
//! them. Those requests carry `Host: evil.example:3001`, and a WebSocket handshake carries the
//! matching `Origin: http://evil.example:3001`, so comparing `Origin` with `Host` lets it in.
//! The one thing the attacker cannot choose is a name the server was told about. So, like Vite's
//! `server.allowedHosts` and webpack-dev-server's `allowedHosts`, every request whose `Host` is
//! not an IP address, `localhost` (or a name under `.localhost`, which browsers resolve to
//! loopback themselves), or a name given with `--allow-host`, is refused with
//! `421 Misdirected Request`, before any handler sees it.
//!
//! It also enforces HTTP/1.1's own rule (RFC 9112 section 3.2): a request with no `Host`, with
//! two, or with one that is not a host name, is a `400`.
//!
//! The server applies [`AllowedHosts::check`] to every request, on both of its paths (hyper and
//! the direct path for event streams); a demo gets its list from [`crate::config::ListenArgs`].

use std::fmt;
use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Version};

use crate::respond::Rejection;

// ANCHOR: allowed_hosts
/// The `Host` names a server answers, besides IP literals and `localhost`.
/// [`AllowedHosts::default`] adds none: the server answers only requests made to an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// Names in ASCII lower case, without a port. One that starts with `.` (`.example.com`)
    /// stands for that domain and every name under it, as in Vite's `allowedHosts`.
    names: Vec<String>,
}

impl AllowedHosts {
    /// IP literals and `localhost` only.
    pub fn local_only() -> Self {
        Self::default()
    }

    /// Also answers requests to these names (`chat.example.com`, or `.example.com` for a whole
    /// domain). A port, a scheme, a path or `*` is refused, with a message saying what to write.
    pub fn allow<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<Self, InvalidHost> {
        let names = names
            .into_iter()
            .map(|name| {
                let name = name.as_ref();
                let bare = name.strip_prefix('.').unwrap_or(name);
                if is_host_name(bare) {
                    Ok(name.to_ascii_lowercase())
                } else {
                    Err(InvalidHost(name.to_owned()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { names })
    }

    /// Whether a request to `host` (a name or an IP literal, without a port) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        let unbracketed = host
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(host);
        if unbracketed.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
        {
            return true;
        }
        self.names.iter().any(|name| match name.strip_prefix('.') {
            Some(domain) => host == domain || host.ends_with(name.as_str()),
            None => host == name,
        })
    }

    /// `Ok` when the request may be answered; otherwise the refusal to send instead:
    /// `400` for a request that breaks HTTP/1.1's `Host` rules, `421` for a name not on the list.
    pub fn check<B>(&self, request: &Request<B>) -> Result<(), Rejection> {
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let (first, second) = (hosts.next(), hosts.next());
        if second.is_some() {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "the request has more than one Host header (RFC 9112 section 3.2)",
            ));
        }
        // In absolute form (`GET http://name/ HTTP/1.1`) the target names the host, and the
        // server must use it rather than `Host` (RFC 9112 section 3.2.2).
        let authority = match (request.uri().authority(), first) {
            (Some(target), _) => target.as_str(),
            (None, Some(value)) => host_text(value)?,
            // HTTP/1.0 did not require `Host`; no browser sends HTTP/1.0.
            (None, None) if request.version() < Version::HTTP_11 => return Ok(()),
            (None, None) => {
                return Err(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "the request has no Host header, which HTTP/1.1 requires (RFC 9112 section 3.2)",
                ));
            }
        };
        let Some(host) = split_authority(authority) else {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("the Host header {authority:?} is not host[:port]"),
            ));
        };
        if self.allows(host) {
            return Ok(());
        }
        Err(Rejection::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer requests for the host {host:?} (a page that made its \
                 own name point at this machine, DNS rebinding, would look like this); if {host} \
                 is really this server's name, start it with --allow-host {host}"
            ),
        ))
    }
}
// ANCHOR_END: allowed_hosts

fn host_text(value: &HeaderValue) -> Result<&str, Rejection> {
    value.to_str().map_err(|_| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            "the Host header is not a host name (it has bytes outside visible ASCII)",
        )
    })
}

/// The host part of `host[:port]` (IPv6 literals in brackets), or `None` if it is not one.
fn split_authority(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        address.parse::<std::net::Ipv6Addr>().ok()?;
        let host = &authority[..address.len() + 2];
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok());
    let host_ok = host.starts_with('[') || is_host_name(host);
    (port_ok && host_ok).then_some(host)
}

/// A DNS name or an IPv4 literal: dot-separated labels of letters, digits, `-` and `_`, with an
/// optional final dot.
fn is_host_name(text: &str) -> bool {
    let text = text.strip_suffix('.').unwrap_or(text);
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A name given to `--allow-host` that no `Host` header could match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHost(String);

impl fmt::Display for InvalidHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a host name: write the name alone, without a scheme, port or path \
             (e.g. chat.example.com, or .example.com for a whole domain)",
            self.0
        )
    }
}

impl std::error::Error for InvalidHost {}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get("/events");
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("a valid test request")
    }

    fn status(allowed: &AllowedHosts, hosts: &[&str]) -> Option<u16> {
        allowed
            .check(&request(hosts))
            .err()
            .map(|rejection| rejection.status().as_u16())
    }

    /// Addresses and localhost are always answered, with or without a port.
    #[test]
    fn addresses_and_localhost_are_answered() {
        let local = AllowedHosts::local_only();
        for host in [
            "127.0.0.1:3000",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:3001",
            "[::1]",
            "localhost:3002",
            "LOCALHOST",
            "localhost.",
            "app.localhost:5173",
        ] {
            assert_eq!(status(&local, &[host]), None, "{host}");
        }
    }

    /// Any other name is a 421 that names the option to pass, unless it was allowed.
    #[test]
    fn other_names_are_misdirected_unless_allowed() {
        let local = AllowedHosts::local_only();
        for host in [
            "evil.example:3001",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
        ] {
            assert_eq!(status(&local, &[host]), Some(421), "{host}");
        }
        let message = local.check(&request(&["evil.example"])).unwrap_err();
        assert!(message.message().contains("--allow-host evil.example"));

        let allowed = AllowedHosts::allow(["chat.example.com", ".corp.example"]).unwrap();
        for host in [
            "chat.example.com",
            "CHAT.example.com:443",
            "corp.example",
            "a.b.corp.example",
        ] {
            assert_eq!(status(&allowed, &[host]), None, "{host}");
        }
        for host in ["example.com", "xchat.example.com", "evilcorp.example"] {
            assert_eq!(status(&allowed, &[host]), Some(421), "{host}");
        }
    }

    /// No Host, two Hosts, or a Host that is not host[:port] is a 400 (RFC 9112 section 3.2).
    #[test]
    fn broken_host_headers_are_400() {
        let local = AllowedHosts::local_only();
        assert_eq!(status(&local, &[]), Some(400));
        assert_eq!(status(&local, &["127.0.0.1", "127.0.0.1"]), Some(400));
        for host in [
            "",
            "a b",
            "127.0.0.1:port",
            "127.0.0.1:99999",
            "[::1",
            "[evil]",
            "a/b",
            "user@127.0.0.1",
        ] {
            assert_eq!(status(&local, &[host]), Some(400), "{host:?}");
        }
    }

    /// HTTP/1.0 did not have Host; an absolute-form target names the host instead of Host.
    #[test]
    fn http_1_0_and_absolute_targets() {
        let local = AllowedHosts::local_only();
        let old = Request::get("/")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        assert!(local.check(&old).is_ok());
        let absolute = Request::get("http://evil.example/")
            .header(header::HOST, "127.0.0.1")
            .body(())
            .unwrap();
        assert_eq!(local.check(&absolute).unwrap_err().status(), 421);
    }

    /// `--allow-host` takes bare names only.
    #[test]
    fn allow_refuses_what_is_not_a_name() {
        for bad in [
            "*",
            "http://chat.example.com",
            "chat.example.com:443",
            "a/b",
            "",
            ".",
        ] {
            assert!(AllowedHosts::allow([bad]).is_err(), "{bad:?}");
        }
    }
}
