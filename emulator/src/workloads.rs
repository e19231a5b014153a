//! Defaulting and validation of Pods and of the workload resources
//! (Deployments, ReplicaSets, DaemonSets), as the API server's defaulting
//! functions and the apps validation apply them: the fields a client reads
//! back after a create (restartPolicy, terminationGracePeriodSeconds,
//! strategies, ...) and the selector-must-match-the-template rule.

use serde_json::{Value, json};

use crate::selector::LabelSelector;
use crate::validation::{FieldError, FieldErrorKind};

/// Sets `obj[key]` to `value` unless it is present.
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        map.entry(key).or_insert(value);
    }
}

/// The defaults of a PodSpec (also applied to workload templates).
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    let account = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(account);
    spec["serviceAccount"] = json!(account);
    for list in ["containers", "initContainers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            default_container(container);
        }
    }
}

fn default_container(container: &mut Value) {
    if !container.is_object() {
        return;
    }
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let pull = if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    default(container, "imagePullPolicy", json!(pull));
    default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", json!("File"));
    for port in container
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        default(port, "protocol", json!("TCP"));
    }
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(p) = container.get_mut(probe).filter(|p| p.is_object()) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
        }
    }
}

/// The defaults of a Deployment, ReplicaSet or DaemonSet (`plural`).
pub fn default_workload(plural: &str, obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let spec = &mut obj["spec"];
    match plural {
        "deployments" => {
            default(spec, "replicas", json!(1));
            default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
        }
        "replicasets" => default(spec, "replicas", json!(1)),
        "daemonsets" => {
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
        }
        _ => return,
    }
    if let Some(pod_spec) = spec.pointer_mut("/template/spec") {
        default_pod_spec(pod_spec);
    }
}

/// The apps validation every workload shares: a selector that is not empty
/// and selects the template's labels.
pub fn validate_workload(obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let selector = obj.pointer("/spec/selector");
    let empty = selector.is_none_or(|s| {
        s.get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
            && s.get("matchExpressions")
                .and_then(Value::as_array)
                .is_none_or(|e| e.is_empty())
    });
    if empty {
        errors.push(FieldError::new(
            FieldErrorKind::Required,
            "spec.selector",
            "Required value",
        ));
        return errors;
    }
    let labels = obj.pointer("/spec/template/metadata/labels");
    match selector.map(LabelSelector::from_json) {
        Some(Ok(parsed)) if parsed.matches(labels) => {}
        Some(Ok(_)) => errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            "spec.template.metadata.labels",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                go_map(labels)
            ),
        )),
        Some(Err(e)) => errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            "spec.selector",
            format!("Invalid value: {e}"),
        )),
        None => {}
    }
    if obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty())
    {
        errors.push(FieldError::new(
            FieldErrorKind::Required,
            "spec.template.spec.containers",
            "Required value",
        ));
    }
    if obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .is_some_and(|r| r < 0)
    {
        errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            "spec.replicas",
            "Invalid value: must be greater than or equal to 0",
        ));
    }
    errors
}

/// A label map rendered like Go's `%v` of a map: `map[k:v k2:v2]`.
fn go_map(labels: Option<&Value>) -> String {
    let pairs: Vec<String> = labels
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
        .collect();
    format!("map[{}]", pairs.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_get_the_api_defaults_and_their_templates_the_pod_defaults() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                         "spec": {"containers": [{"name": "c", "image": "x:1", "ports": [{"containerPort": 80}]}]}}}});
        default_workload("deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["serviceAccountName"], "default");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert!(validate_workload(&d).is_empty());
    }

    #[test]
    fn a_selector_that_misses_the_template_is_invalid() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let errors = validate_workload(&d);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.template.metadata.labels");
        assert!(
            errors[0]
                .message
                .contains("`selector` does not match template `labels`")
        );
        let none = json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}});
        assert_eq!(validate_workload(&none)[0].field, "spec.selector");
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut spec = json!({"restartPolicy": "Never", "serviceAccount": "legacy",
                              "terminationGracePeriodSeconds": 5, "containers": []});
        default_pod_spec(&mut spec);
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["terminationGracePeriodSeconds"], 5);
        assert_eq!(spec["serviceAccountName"], "legacy");
    }
}
