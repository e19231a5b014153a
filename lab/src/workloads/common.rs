//! What the workload controllers share: label selectors, ownership,
//! pod states, template hashes and building a Pod from a template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Whether `selector` selects `labels` (matchLabels and matchExpressions;
/// an empty selector selects nothing, as the workload controllers treat it).
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels = selector.match_labels.as_ref();
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(BTreeMap::is_empty) && expressions.is_empty() {
        return false;
    }
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && expressions.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether every `key: value` of a nodeSelector is among `labels`.
pub fn node_selector_matches(
    selector: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The uid of the controller owning `meta`, if any.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// Pods whose controller is the object with `uid`.
pub fn owned_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid))
        .collect()
}

/// Active pods controlled by the object with metadata `owner`.
pub fn active_pods_of<'a>(pods: &'a [Pod], owner: &ObjectMeta) -> Vec<&'a Pod> {
    owner
        .uid
        .as_deref()
        .map(|uid| {
            owned_by(pods, uid)
                .into_iter()
                .filter(|p| is_active(p))
                .collect()
        })
        .unwrap_or_default()
}

/// A controller reference to an object of `kind` in `api_version`.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the pod's containers have ended for good.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Neither terminating nor finished: it counts towards a controller's replicas.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminating(pod) && !is_finished(pod)
}

/// The pod's phase ("" before the first status).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node the pod is bound to.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The creation time as text that sorts chronologically (RFC 3339).
pub fn created(meta: &ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// Characters of generated names and hashes (no vowels, no look-alikes),
/// as the API machinery's `SafeEncodeString` uses them.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A short stable hash of a pod template: FNV-1a (32 bit) of its JSON,
/// its decimal digits mapped to safe characters, like the label values
/// `pod-template-hash` and `controller-revision-hash` look.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|d| SAFE_ALPHABET[usize::from(d) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// A Pod from `template`, named `<generate_name><5 chars>` by the API,
/// with `extra_labels`, owned by `owner` and bound to `node` when given.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    generate_name: &str,
    namespace: &str,
    extra_labels: &BTreeMap<String, String>,
    owner: OwnerReference,
    node: Option<&str>,
) -> Pod {
    let source = template.metadata.clone().unwrap_or_default();
    let mut labels = source.labels.unwrap_or_default();
    labels.extend(extra_labels.clone());
    let mut spec = template.spec.clone().unwrap_or_default();
    if let Some(node) = node {
        spec.node_name = Some(node.to_string());
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: source.annotations,
            finalizers: source.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// An `IntOrString` count or percentage of `total`, rounded `up` or down.
pub fn scaled(value: Option<&IntOrString>, total: i32, default: i32, up: bool) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(percent) => {
                    let scaled = i64::from(total) * percent;
                    let value = if up {
                        (scaled + 99) / 100
                    } else {
                        scaled / 100
                    };
                    i32::try_from(value).unwrap_or(default)
                }
                None => s.parse().unwrap_or(default),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        assert!(selects(
            &selector,
            Some(&labels(&[("app", "web"), ("tier", "b")]))
        ));
        assert!(!selects(
            &selector,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selects(&selector, Some(&labels(&[("tier", "a")]))));
        assert!(!selects(
            &LabelSelector::default(),
            Some(&labels(&[("a", "b")]))
        ));
    }

    #[test]
    fn template_hashes_are_stable_short_and_follow_the_template() {
        let mut template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }),
            spec: None,
        };
        let first = template_hash(&template);
        assert_eq!(first, template_hash(&template.clone()));
        assert!(first.len() <= 10 && first.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        template
            .metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert("v".into(), "2".into()));
        assert_ne!(first, template_hash(&template));
    }

    #[test]
    fn percentages_scale_with_rounding() {
        let quarter = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&quarter), 3, 0, false), 0);
        assert_eq!(scaled(Some(&quarter), 3, 0, true), 1);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 3, 0, true), 2);
        assert_eq!(scaled(None, 3, 1, true), 1);
    }
}
