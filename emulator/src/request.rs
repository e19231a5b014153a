//! Parsing of request paths and query strings into what the handlers need,
//! following the apiserver's RequestInfo rules.

use std::collections::HashMap;

/// A request for a resource (as opposed to discovery or health paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/api` (core versions).
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    Resources { group: String, version: String },
    /// A resource path.
    Resource(ResourcePath),
    /// Anything else (`/version`, `/healthz`, ...).
    Other(String),
}

/// Namespace subresources (`/api/v1/namespaces/<name>/<sub>`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses a request path.
pub fn parse_path(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["apis", g] => return Route::Group(g.to_string()),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return Route::Other(path.to_string()),
    };
    if rest.is_empty() {
        return Route::Resources { group, version };
    }
    let mut parts: &[&str] = rest;
    let mut namespace = None;
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = Some(parts[1].to_string());
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }
    let mut rp = ResourcePath {
        group,
        version,
        resource: parts[0].to_string(),
        namespace,
        name: parts.get(1).map(|s| s.to_string()),
        subresource: parts.get(2).map(|s| s.to_string()),
    };
    if rp.resource == "namespaces" {
        // The namespace's own name, not a namespace scope.
        rp.name = rp.namespace.take();
        rp.subresource = parts.get(2).map(|s| s.to_string());
    }
    if parts.len() > 3 {
        return Route::Other(path.to_string());
    }
    Route::Resource(rp)
}

/// Decodes `%xx` and `+` in a query component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters (last value wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k), percent_decode(v));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Route {
        Route::Resource(ResourcePath {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        })
    }

    #[test]
    fn paths_are_split_like_the_apiserver_does() {
        assert_eq!(
            parse_path("/api/v1/namespaces"),
            rp("", "namespaces", None, None, None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/a"),
            rp("", "namespaces", None, Some("a"), None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/a/status"),
            rp("", "namespaces", None, Some("a"), Some("status"))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/a/pods"),
            rp("", "pods", Some("a"), None, None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/a/serviceaccounts/s/token"),
            rp("", "serviceaccounts", Some("a"), Some("s"), Some("token"))
        );
        assert_eq!(
            parse_path("/apis/apps/v1/deployments"),
            rp("apps", "deployments", None, None, None)
        );
        assert_eq!(
            parse_path("/apis/apps/v1"),
            Route::Resources {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(parse_path("/version"), Route::Other("/version".into()));
    }

    #[test]
    fn query_values_are_decoded() {
        let q = parse_query(Some("labelSelector=a%3Db%2Cc+in+(x)&watch=1"));
        assert_eq!(
            q.get("labelSelector").map(String::as_str),
            Some("a=b,c in (x)")
        );
        assert_eq!(q.get("watch").map(String::as_str), Some("1"));
    }
}
