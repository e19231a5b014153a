//! mc-identity
