//! mc-tunnel
