//! The Kubernetes API emulator used by the lab and the tests.
