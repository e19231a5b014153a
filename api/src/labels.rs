//! Label and annotation keys.

/// Set to `"true"` on a Service to export it to linked clusters.
pub const EXPORTED: &str = "mc.dev/exported";
/// Value of [`EXPORTED`] that exports a Service.
pub const EXPORTED_VALUE: &str = "true";
/// Label selector that matches every exported Service
/// (`EXPORTED=EXPORTED_VALUE`).
pub const EXPORTED_SELECTOR: &str = "mc.dev/exported=true";
/// On a mirror Service: the remote cluster it mirrors.
pub const MIRROR_OF_CLUSTER: &str = "mc.dev/mirror-of-cluster";
/// On a mirror Service: the remote Service's name.
pub const MIRROR_OF_SERVICE: &str = "mc.dev/mirror-of-service";
/// Label selector that matches every mirror Service.
pub const MIRROR_SELECTOR: &str = "mc.dev/mirror-of-cluster";
/// On an exported Service: who may call it through the gateway (see
/// [`AllowedCallers`](crate::AllowedCallers)). Absent: any caller from a
/// linked cluster.
pub const ALLOWED_CALLERS: &str = "mc.dev/allowed-callers";
/// On a ServiceAccount in the target cluster's `mc-system`, made by `kubectl
/// mc link`: the name of the cluster that links here with its token. The
/// gateway accepts callers only from clusters named by such an account.
pub const LINKED_CLUSTER: &str = "mc.dev/linked-cluster";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_selector_is_the_exported_label() {
        assert_eq!(EXPORTED_SELECTOR, format!("{EXPORTED}={EXPORTED_VALUE}"));
    }
}
