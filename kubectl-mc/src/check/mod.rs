//! `check`: named checks, each a struct that judges a [`Snapshot`] and
//! returns pass, warn, fail (each non-pass with a hint) or skip.
//!
//! Trust anchors are compared through the user's own contexts: the Link's
//! credentials only read Services and EndpointSlices, so `check` reads the
//! other cluster's `mc-trust-anchor` only when `--remote-context` names a
//! context for it. Without one, a gateway reachable from here proves the
//! shared anchor by chaining to this cluster's anchor; otherwise the check
//! is skipped and says why.

pub mod certs;
pub mod cluster;
pub mod links;
pub mod snapshot;
pub mod tls_probe;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cli::{CheckArgs, Global, OutputFormat};
use crate::kube_ctx::KubeContext;
pub use snapshot::Snapshot;

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// All good.
    Pass,
    /// Works, but needs attention: the hint says what.
    Warn(String),
    /// Broken: the hint says what to do.
    Fail(String),
    /// Could not be checked from here: the reason.
    Skip(String),
}

/// A named check.
pub trait Check {
    /// What the check asserts, e.g. `links.mc.dev CRD is installed`.
    fn name(&self) -> String;
    /// Judges the snapshot.
    fn run(&self, snapshot: &Snapshot) -> Outcome;
}

/// One check's result, as printed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// `pass`, `warn`, `fail` or `skip`.
    pub result: &'static str,
    /// What to do (or why it was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// A group of results.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Category {
    /// Group name.
    pub name: String,
    /// Results in order.
    pub checks: Vec<CheckResult>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// The context checked.
    pub context: String,
    /// False when any check failed.
    pub success: bool,
    /// Results by group.
    pub categories: Vec<Category>,
}

fn result_of(check: &dyn Check, snapshot: &Snapshot) -> CheckResult {
    let (result, hint) = match check.run(snapshot) {
        Outcome::Pass => ("pass", None),
        Outcome::Warn(h) => ("warn", Some(h)),
        Outcome::Fail(h) => ("fail", Some(h)),
        Outcome::Skip(h) => ("skip", Some(h)),
    };
    CheckResult {
        name: check.name(),
        result,
        hint,
    }
}

/// Runs every check against a snapshot.
pub fn evaluate(snapshot: &Snapshot, expiry_warning: std::time::Duration) -> Report {
    let mut categories = vec![Category {
        name: "mc".to_string(),
        checks: cluster::checks(expiry_warning)
            .iter()
            .map(|c| result_of(c.as_ref(), snapshot))
            .collect(),
    }];
    let link_checks = links::checks(snapshot);
    if !link_checks.is_empty() {
        categories.push(Category {
            name: "links".to_string(),
            checks: link_checks
                .iter()
                .map(|c| result_of(c.as_ref(), snapshot))
                .collect(),
        });
    }
    let success = categories
        .iter()
        .flat_map(|c| &c.checks)
        .all(|c| c.result != "fail");
    Report {
        context: snapshot.context.clone(),
        success,
        categories,
    }
}

/// Renders the report for people.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    for category in &report.categories {
        out.push_str(&format!(
            "{}\n{}\n",
            category.name,
            "-".repeat(category.name.len())
        ));
        for check in &category.checks {
            let mark = match check.result {
                "pass" => "√",
                "warn" => "‼",
                "fail" => "×",
                _ => "-",
            };
            match (&check.hint, check.result) {
                (Some(hint), "skip") => {
                    out.push_str(&format!("{mark} {} (skipped: {hint})\n", check.name))
                }
                (Some(hint), _) => out.push_str(&format!("{mark} {} — hint: {hint}\n", check.name)),
                (None, _) => out.push_str(&format!("{mark} {}\n", check.name)),
            }
        }
        out.push('\n');
    }
    out.push_str(if report.success {
        "Status check results are √\n"
    } else {
        "Status check results are ×\n"
    });
    out
}

/// `kubectl mc check`.
pub async fn run(global: &Global, args: &CheckArgs) -> Result<()> {
    let format = global.output.unwrap_or(OutputFormat::Table);
    let ctx = KubeContext::connect(global, None).await?;
    let report = match ctx.ensure_reachable().await {
        Ok(()) => {
            let snapshot = snapshot::take(&ctx, global, &args.remote_contexts, args.timeout).await;
            evaluate(&snapshot, args.expiry_warning)
        }
        Err(e) => Report {
            context: ctx.name.clone(),
            success: false,
            categories: vec![Category {
                name: "kubernetes-api".to_string(),
                checks: vec![CheckResult {
                    name: format!("can reach context {:?}", ctx.name),
                    result: "fail",
                    hint: Some(format!("{e:#}")),
                }],
            }],
        },
    };
    let text = match format {
        OutputFormat::Table => render_table(&report),
        other => crate::output::render(other, &crate::output::Table::default(), &report)?,
    };
    print!("{text}");
    if !report.success {
        bail!("checks failed in context {:?}", ctx.name);
    }
    Ok(())
}
