//! Label and annotation keys.

/// Set to `"true"` on a Service to export it to linked clusters.
pub const EXPORTED: &str = "mc.dev/exported";
/// Value of [`EXPORTED`] that exports a Service.
pub const EXPORTED_VALUE: &str = "true";
/// On a mirror Service: the remote cluster it mirrors.
pub const MIRROR_OF_CLUSTER: &str = "mc.dev/mirror-of-cluster";
/// On a mirror Service: the remote Service's name.
pub const MIRROR_OF_SERVICE: &str = "mc.dev/mirror-of-service";
/// Label selector that matches every mirror Service.
pub const MIRROR_SELECTOR: &str = "mc.dev/mirror-of-cluster";
