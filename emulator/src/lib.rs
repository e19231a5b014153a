//! A Kubernetes API server emulator for the lab and the tests: HTTPS, the
//! real status codes, resourceVersion and watch semantics, CRDs with schema
//! validation, RBAC and Service IP allocation. The product never depends on it.

pub mod validation;
pub mod rbac;
pub mod schema;
pub mod selector;
pub mod service;
