//! Authorization: `system:masters` may do anything, everyone else goes
//! through RBAC over the stored Roles, ClusterRoles and bindings.

use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::rbac::{self, Attributes, Decision, RbacSource};
use crate::state::State;

const RBAC: &str = "rbac.authorization.k8s.io";

struct StoreRbac<'a>(&'a State);

impl StoreRbac<'_> {
    fn key(plural: &str) -> (String, String) {
        (RBAC.to_string(), plural.to_string())
    }
}

impl RbacSource for StoreRbac<'_> {
    fn role(&self, namespace: &str, name: &str) -> Option<Value> {
        self.0
            .store
            .get(&Self::key("roles"), namespace, name)
            .map(|o| (*o).clone())
    }
    fn cluster_role(&self, name: &str) -> Option<Value> {
        self.0
            .store
            .get(&Self::key("clusterroles"), "", name)
            .map(|o| (*o).clone())
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Value> {
        self.0
            .store
            .list(&Self::key("rolebindings"), Some(namespace))
            .iter()
            .map(|o| (**o).clone())
            .collect()
    }
    fn cluster_role_bindings(&self) -> Vec<Value> {
        self.0
            .store
            .list(&Self::key("clusterrolebindings"), None)
            .iter()
            .map(|o| (**o).clone())
            .collect()
    }
    fn cluster_roles(&self) -> Vec<Value> {
        self.0
            .store
            .list(&Self::key("clusterroles"), None)
            .iter()
            .map(|o| (**o).clone())
            .collect()
    }
}

/// Decides whether `user` may do what `attrs` describe.
pub fn authorize(state: &State, user: &UserInfo, attrs: &Attributes) -> Decision {
    if user.is_master() {
        return Decision::Allow;
    }
    let u = rbac::UserInfo {
        name: user.name.clone(),
        groups: user.groups.clone(),
    };
    rbac::authorize(&u, attrs, &StoreRbac(state))
}

/// Answers a SelfSubjectAccessReview for `user`.
pub fn self_subject_access_review(state: &State, user: &UserInfo, mut review: Value) -> Value {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).map(str::to_string);
    let attrs = if spec.get("nonResourceAttributes").is_some() {
        Attributes {
            verb: s("/nonResourceAttributes/verb").unwrap_or_default(),
            path: s("/nonResourceAttributes/path"),
            ..Attributes::default()
        }
    } else {
        Attributes {
            verb: s("/resourceAttributes/verb").unwrap_or_default(),
            api_group: s("/resourceAttributes/group").unwrap_or_default(),
            resource: s("/resourceAttributes/resource").unwrap_or_default(),
            subresource: s("/resourceAttributes/subresource").unwrap_or_default(),
            namespace: s("/resourceAttributes/namespace").filter(|n| !n.is_empty()),
            name: s("/resourceAttributes/name").filter(|n| !n.is_empty()),
            path: None,
        }
    };
    let status = match authorize(state, user, &attrs) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    };
    review["status"] = status;
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    review
}
