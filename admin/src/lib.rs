//! mc-admin
