//! The certificate signer: watches CertificateSigningRequests of signer
//! `mc.dev/identity`, approves and signs those [`policy::decide`] accepts
//! with the cluster issuer (Secret `mc-system/mc-identity-issuer`), and
//! denies the rest with a reason. Runs only on the leader.
//!
//! Approval goes through the `approval` subresource (condition
//! `Approved`), the chain (leaf, then issuer) through `status`
//! (`status.certificate`). A request for an account the signer will not
//! serve is `Denied`; one that someone else approved but the signer will
//! not sign, or that cannot be signed, gets `Failed`.

pub mod issuer;
pub mod policy;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use mc_identity::SIGNER_NAME;

use crate::context::Context;
use issuer::IssuerCache;
use policy::{Decision, SignerPolicy};

/// How often every pending request is looked at again (e.g. after the
/// issuer Secret appeared, or a write failed).
const RESYNC: Duration = Duration::from_secs(5);

/// Field selector of mc's requests.
fn selector() -> String {
    format!("spec.signerName={SIGNER_NAME}")
}

/// Signs and denies until the task is dropped (leadership lost).
pub async fn run(ctx: Context) {
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let policy = SignerPolicy {
        allowed: ctx.config.signer_accounts.clone(),
        lifetime: ctx.config.leaf_lifetime,
    };
    let issuers = IssuerCache::new(
        ctx.client.clone(),
        &ctx.config.namespace,
        &ctx.config.issuer_secret,
    );
    let events = watcher(api.clone(), watcher::Config::default().fields(&selector()))
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(events);
    let mut resync = tokio::time::interval(RESYNC);
    tracing::info!(signer = SIGNER_NAME, "certificate signer started");
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(csr)) => handle(&ctx, &api, &issuers, &policy, csr).await,
                Some(Err(error)) => tracing::warn!(%error, "CSR watch failed; retrying"),
                None => return,
            },
            _ = resync.tick() => {
                match api.list(&ListParams::default().fields(&selector())).await {
                    Ok(list) => {
                        for csr in list.items {
                            handle(&ctx, &api, &issuers, &policy, csr).await;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "listing CSRs failed"),
                }
            }
        }
    }
}

/// Decides about one request and writes the decision.
async fn handle(
    ctx: &Context,
    api: &Api<CertificateSigningRequest>,
    issuers: &IssuerCache,
    policy: &SignerPolicy,
    csr: CertificateSigningRequest,
) {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let issuer = match issuers.current().await {
        Ok(issuer) => issuer,
        Err(error) => {
            // Leave the request pending: it is signed once the issuer loads.
            tracing::warn!(csr = %name, error = format!("{error:#}"), "no usable issuer; request left pending");
            return;
        }
    };
    if issuer.cluster().cluster != ctx.config.cluster_name {
        tracing::error!(csr = %name, issuer_cluster = %issuer.cluster().cluster,
            cluster = %ctx.config.cluster_name, "the issuer names another cluster; refusing to sign");
        return;
    }
    let result = match policy::decide(&csr, policy, &issuer.cluster().trust_domain) {
        Decision::Ignore => return,
        Decision::Refuse {
            reason,
            message,
            approved,
        } => {
            tracing::warn!(csr = %name, user = csr.spec.username.as_deref().unwrap_or_default(),
                reason = reason.as_str(), %message, "certificate request refused");
            ctx.metrics
                .signer_decision(if approved { "failed" } else { "denied" }, reason.as_str());
            refuse(api, csr, approved, reason.as_str(), &message).await
        }
        Decision::Sign {
            request,
            id,
            lifetime,
            approved,
        } => {
            let chain = match issuer.sign(&request, &id, lifetime) {
                Ok(chain) => chain,
                Err(error) => {
                    tracing::error!(csr = %name, error = format!("{error:#}"), "signing failed");
                    return;
                }
            };
            let result = issue(api, csr, approved, chain).await;
            if result.is_ok() {
                ctx.metrics.signer_decision("signed", "");
                tracing::info!(csr = %name, %id, lifetime_secs = lifetime.as_secs(), "certificate issued");
            }
            result
        }
    };
    if let Err(error) = result {
        // A conflict means the object moved on: the next event retries.
        tracing::debug!(csr = %name, %error, "writing the CSR decision failed");
    }
}

fn condition(type_: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn with_condition(
    mut csr: CertificateSigningRequest,
    cond: CertificateSigningRequestCondition,
) -> CertificateSigningRequest {
    let status = csr
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
    csr
}

/// Refuses a request: `Denied` through `/approval` when it was never
/// approved, `Failed` through `/status` when it was (an approved request
/// cannot be denied any more).
async fn refuse(
    api: &Api<CertificateSigningRequest>,
    csr: CertificateSigningRequest,
    approved: bool,
    reason: &str,
    message: &str,
) -> kube::Result<()> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let pp = PostParams::default();
    if approved {
        let csr = with_condition(csr, condition("Failed", reason, message));
        api.replace_status(&name, &pp, &csr).await.map(|_| ())
    } else {
        let csr = with_condition(csr, condition("Denied", reason, message));
        api.replace_subresource("approval", &name, &pp, &csr)
            .await
            .map(|_| ())
    }
}

async fn issue(
    api: &Api<CertificateSigningRequest>,
    csr: CertificateSigningRequest,
    approved: bool,
    chain: String,
) -> kube::Result<()> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let pp = PostParams::default();
    let mut csr = csr;
    if !approved {
        let approval = with_condition(
            csr,
            condition(
                "Approved",
                "McIdentityApproved",
                "the requester's ServiceAccount matches the requested SPIFFE ID",
            ),
        );
        csr = api
            .replace_subresource("approval", &name, &pp, &approval)
            .await?;
    }
    csr.status
        .get_or_insert_with(CertificateSigningRequestStatus::default)
        .certificate = Some(ByteString(chain.into_bytes()));
    api.replace_status(&name, &pp, &csr).await.map(|_| ())
}
