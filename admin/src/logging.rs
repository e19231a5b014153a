//! The proxies' logs: human-readable lines on stderr, filtered by `RUST_LOG`
//! with targets and levels only (`info`, `warn,mc_gateway=debug`, ...).
//!
//! Span and field filters (`[span{field=value}]`) are not supported: they
//! need a regular-expression engine, which is most of a log filter's code
//! and would stay resident in every proxy (bench/README.md, "Memory").

use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info";

/// Parses a `RUST_LOG` value. An empty value means [`DEFAULT_FILTER`].
pub fn parse_filter(value: &str) -> Result<Targets, String> {
    let value = if value.trim().is_empty() {
        DEFAULT_FILTER
    } else {
        value
    };
    Targets::from_str(value)
        .map_err(|e| format!("RUST_LOG={value:?} is not a list of [target=]level directives ({e})"))
}

/// Installs the global subscriber. An invalid `RUST_LOG` is reported on
/// stderr and replaced by [`DEFAULT_FILTER`] instead of silencing the logs.
pub fn init() {
    let value = std::env::var("RUST_LOG").unwrap_or_default();
    let (filter, problem) = match parse_filter(&value) {
        Ok(filter) => (filter, None),
        Err(problem) => (
            Targets::from_str(DEFAULT_FILTER).unwrap_or_default(),
            Some(problem),
        ),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    if let Some(problem) = problem {
        tracing::warn!("{problem}; logging at {DEFAULT_FILTER}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn levels_per_target() {
        let filter = parse_filter("warn,mc_gateway=debug").unwrap();
        assert!(filter.would_enable("mc_gateway::inbound", &Level::DEBUG));
        assert!(!filter.would_enable("mc_gateway::inbound", &Level::TRACE));
        assert!(!filter.would_enable("kube_client", &Level::INFO));
        assert!(filter.would_enable("kube_client", &Level::WARN));
    }

    #[test]
    fn empty_means_info_and_garbage_is_refused() {
        let filter = parse_filter("").unwrap();
        assert!(filter.would_enable("anything", &Level::INFO));
        assert!(!filter.would_enable("anything", &Level::DEBUG));
        let error = parse_filter("mc_gateway=loud").unwrap_err();
        assert!(error.contains("mc_gateway=loud"), "{error}");
    }
}
