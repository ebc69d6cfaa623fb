//! The manifests in deploy/: every object kustomize renders (the default and
//! each overlay) parses strictly into its k8s-openapi type, and says what the
//! controller needs: the DaemonSet's host network, capabilities, probes,
//! BPF filesystem and identity; the IngressClass; RBAC granting exactly the
//! API calls the controller makes; overlays that change only what they claim.
//!
//! Rendering uses the kubectl that `cargo xtask setup --k8s` builds (or the
//! one in KUBEBUILDER_ASSETS); no API server is involved.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::{
    Resource,
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{
            ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount, ServicePort,
        },
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use xdp_ingress_lab::{COMMAND_TIMEOUT, run_with_timeout};

/// The namespace everything namespaced is installed in.
const NAMESPACE: &str = "xdp-ingress";
/// The name of the ServiceAccount, roles, bindings and workloads.
const NAME: &str = "xdp-ingress";
/// The Lease the replicas elect a leader with (`--election-id`).
const ELECTION_ID: &str = "xdp-ingress-leader";
/// The port of /healthz, /readyz and /metrics (`--metrics-addr`).
const METRICS_PORT: i32 = 10254;

/// The cluster-wide API calls the controller makes: (API group, resource,
/// verb). Change it together with the code and deploy/base/rbac.yaml.
const CLUSTER_CALLS: &[(&str, &str, &str)] = &[
    ("networking.k8s.io", "ingresses", "list"),
    ("networking.k8s.io", "ingresses", "watch"),
    ("networking.k8s.io", "ingresses/status", "patch"),
    ("networking.k8s.io", "ingressclasses", "list"),
    ("networking.k8s.io", "ingressclasses", "watch"),
    ("", "services", "list"),
    ("", "services", "watch"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("discovery.k8s.io", "endpointslices", "list"),
    ("discovery.k8s.io", "endpointslices", "watch"),
    ("", "nodes", "get"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    ("events.k8s.io", "events", "list"),
];

/// The API calls in the controller's own namespace: (API group, resource,
/// verb, the one object's name when the grant is limited to it).
const NAMESPACE_CALLS: &[(&str, &str, &str, Option<&str>)] = &[
    ("coordination.k8s.io", "leases", "create", None),
    ("coordination.k8s.io", "leases", "get", Some(ELECTION_ID)),
    ("coordination.k8s.io", "leases", "patch", Some(ELECTION_ID)),
    ("", "pods", "get", None),
    ("", "pods", "list", None),
];

/// The capabilities the container gets instead of being privileged.
const CAPABILITIES: &[&str] = &[
    "BPF",
    "NET_ADMIN",
    "PERFMON",
    "SYS_RESOURCE",
    "NET_BIND_SERVICE",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The kubectl to render with: the one the cluster tests use
/// (`$KUBEBUILDER_ASSETS`, else what `cargo xtask setup --k8s` built).
fn kubectl() -> Result<PathBuf> {
    let kubectl = xdp_ingress_lab::k8s::k8s_assets_dir().join("kubectl");
    ensure!(
        kubectl.is_file(),
        "no kubectl at {} to render deploy/ with: run `cargo xtask setup --k8s` (or set KUBEBUILDER_ASSETS)",
        kubectl.display()
    );
    Ok(kubectl)
}

/// The objects `kubectl kustomize <dir>` renders, as JSON values.
fn render(kustomization: &str) -> Result<Vec<Value>> {
    let dir = deploy_dir().join(kustomization);
    let output = run_with_timeout(
        Command::new(kubectl()?).arg("kustomize").arg(&dir),
        COMMAND_TIMEOUT,
    )?;
    ensure!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_documents(&String::from_utf8(output.stdout)?)
        .with_context(|| format!("the output of kubectl kustomize {}", dir.display()))
}

/// Every non-empty document of a YAML stream.
fn parse_documents(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// `value` as a `T`, strictly: serialized back, it must be the same value,
/// so a misspelled, misplaced or unknown field (which deserializing alone
/// ignores) fails.
fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T> {
    let typed: T = serde_json::from_value(value.clone())
        .with_context(|| format!("{} does not parse", describe(value)))?;
    let back = serde_json::to_value(&typed)?;
    if back != *value {
        bail!(
            "{} has fields its type does not know (or of the wrong shape):\n{}",
            describe(value),
            difference(value, &back, "").join("\n")
        );
    }
    Ok(typed)
}

/// `Kind namespace/name`, for messages.
fn describe(value: &Value) -> String {
    let field = |path: &str| value.pointer(path).and_then(Value::as_str).unwrap_or("?");
    format!(
        "{} {}/{}",
        field("/kind"),
        field("/metadata/namespace"),
        field("/metadata/name")
    )
}

/// Where two JSON values differ, as `path: written vs understood` lines.
fn difference(written: &Value, understood: &Value, path: &str) -> Vec<String> {
    match (written, understood) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .flat_map(|key| {
                    let null = Value::Null;
                    difference(
                        a.get(key).unwrap_or(&null),
                        b.get(key).unwrap_or(&null),
                        &format!("{path}/{key}"),
                    )
                })
                .collect()
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(index, (a, b))| difference(a, b, &format!("{path}/{index}")))
            .collect(),
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!("  {path}: written {a}, understood {b}")],
    }
}

/// Checks that every object parses strictly into the type its apiVersion
/// and kind name; an object of any other kind fails.
fn check_strictly_typed(objects: &[Value]) -> Result<()> {
    objects.iter().try_for_each(check_strictly_typed_one)
}

fn check_strictly_typed_one(object: &Value) -> Result<()> {
    // The first of the types that `object` is, parsed strictly.
    macro_rules! as_one_of {
        ($($type:ty),+ $(,)?) => {
            $(
                if is::<$type>(object) {
                    return strict::<$type>(object).map(drop);
                }
            )+
        };
    }
    as_one_of!(
        Namespace,
        ServiceAccount,
        ClusterRole,
        ClusterRoleBinding,
        Role,
        RoleBinding,
        IngressClass,
        DaemonSet,
        Deployment,
        Service,
        EndpointSlice,
        Ingress,
        Secret,
        ConfigMap,
    );
    bail!(
        "{}: no type is checked for {} {}: add it to this test",
        describe(object),
        object["apiVersion"],
        object["kind"]
    )
}

/// True when `object` is a `T` by its apiVersion and kind.
fn is<T: Resource>(object: &Value) -> bool {
    object["apiVersion"] == T::API_VERSION && object["kind"] == T::KIND
}

/// The objects rendered from one kustomization, typed on demand.
struct Rendered {
    objects: Vec<Value>,
}

impl Rendered {
    fn of(kustomization: &str) -> Result<Self> {
        let objects = render(kustomization)?;
        check_strictly_typed(&objects)
            .with_context(|| format!("rendering deploy/{kustomization}"))?;
        Ok(Self { objects })
    }

    /// Every object of type `T`.
    fn all<T: Resource + DeserializeOwned + Serialize>(&self) -> Result<Vec<T>> {
        self.objects
            .iter()
            .filter(|object| is::<T>(object))
            .map(strict::<T>)
            .collect()
    }

    /// The one object of type `T`.
    fn one<T: Resource + DeserializeOwned + Serialize>(&self) -> Result<T> {
        let mut all = self.all::<T>()?;
        ensure!(
            all.len() == 1,
            "expected one {}, found {}",
            T::KIND,
            all.len()
        );
        Ok(all.remove(0))
    }

    /// The objects other than those of type `T`, as values.
    fn except<T: Resource>(&self) -> Vec<&Value> {
        self.objects.iter().filter(|o| !is::<T>(o)).collect()
    }
}

fn pod_spec_of_daemonset(daemonset: &DaemonSet) -> Result<&PodSpec> {
    daemonset
        .spec
        .template
        .spec
        .as_ref()
        .context("the DaemonSet has no pod spec")
}

fn the_container(pod: &PodSpec) -> Result<&Container> {
    ensure!(
        pod.containers.len() == 1 && pod.init_containers.is_none(),
        "expected one container"
    );
    Ok(&pod.containers[0])
}

fn args(container: &Container) -> &[String] {
    container.args.as_deref().unwrap_or_default()
}

/// The value of `--flag=value` in the container's arguments.
fn flag<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    args(container)
        .iter()
        .find_map(|arg| arg.strip_prefix(prefix.as_str()))
}

fn capabilities(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let caps = container
        .security_context
        .as_ref()
        .and_then(|context| context.capabilities.as_ref());
    let set = |list: Option<&Vec<String>>| list.into_iter().flatten().cloned().collect();
    (
        set(caps.and_then(|caps| caps.add.as_ref())),
        set(caps.and_then(|caps| caps.drop.as_ref())),
    )
}

/// The checks the DaemonSet and the Deployment share: the container, its
/// identity, probes, BPF filesystem and graceful termination.
fn check_controller_pod(pod: &PodSpec) -> Result<()> {
    let container = the_container(pod)?;
    ensure!(
        pod.service_account_name.as_deref() == Some(NAME),
        "the pod runs as ServiceAccount {:?}",
        pod.service_account_name
    );
    ensure!(
        container.image.as_deref() == Some(&format!("xdp-ingress:{}", env!("CARGO_PKG_VERSION"))),
        "image {:?} is not the one `cargo xtask image` tags",
        container.image
    );
    ensure!(args(container).first().map(String::as_str) == Some("run"));
    ensure!(
        args(container)
            .iter()
            .all(|arg| arg == "run" || arg.starts_with("--")),
        "arguments are `--flag=value`, one per item: {:?}",
        args(container)
    );
    ensure!(
        flag(container, "manifests").is_none(),
        "--manifests would turn the cluster mode off"
    );
    ensure!(flag(container, "interface").is_some(), "no --interface");
    ensure!(flag(container, "ingress-class") == Some("xdp"));
    ensure!(flag(container, "election-id") == Some(ELECTION_ID));
    ensure!(flag(container, "metrics-addr") == Some(&*format!("0.0.0.0:{METRICS_PORT}")));
    ensure!(flag(container, "http-addr") == Some("0.0.0.0:80"));
    ensure!(flag(container, "https-addr") == Some("0.0.0.0:443"));

    // Capabilities, not privileges; root only for them to take effect.
    let context = container
        .security_context
        .as_ref()
        .context("no securityContext")?;
    let (added, dropped) = capabilities(container);
    let wanted: BTreeSet<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
    ensure!(
        added == wanted,
        "capabilities added: {added:?}, wanted {wanted:?}"
    );
    ensure!(
        dropped == BTreeSet::from(["ALL".to_owned()]),
        "capabilities dropped: {dropped:?}"
    );
    ensure!(context.privileged.is_none(), "privileged is set");
    ensure!(context.allow_privilege_escalation == Some(false));
    ensure!(context.read_only_root_filesystem == Some(true));
    ensure!(context.run_as_non_root == Some(false));

    // The downward API: who this replica is.
    for (variable, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("NODE_NAME", "spec.nodeName"),
    ] {
        let path = container
            .env
            .iter()
            .flatten()
            .find(|env| env.name == variable)
            .and_then(|env| env.value_from.as_ref())
            .and_then(|from| from.field_ref.as_ref())
            .map(|field_ref| field_ref.field_path.as_str());
        ensure!(
            path == Some(field),
            "{variable} comes from {path:?}, not {field}"
        );
    }

    // Probes on the metrics port, by its name.
    let metrics = container
        .ports
        .iter()
        .flatten()
        .find(|port| port.container_port == METRICS_PORT)
        .and_then(|port| port.name.clone())
        .context("the metrics port is not declared")?;
    for (probe, path) in [
        (&container.liveness_probe, "/healthz"),
        (&container.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|probe| probe.http_get.as_ref())
            .with_context(|| format!("no HTTP probe of {path}"))?;
        ensure!(get.path.as_deref() == Some(path));
        ensure!(
            get.port == IntOrString::String(metrics.clone())
                || get.port == IntOrString::Int(METRICS_PORT),
            "the probe of {path} is on port {:?}",
            get.port
        );
    }
    for (name, number) in [("http", 80), ("https", 443)] {
        ensure!(
            container
                .ports
                .iter()
                .flatten()
                .any(|port| port.name.as_deref() == Some(name) && port.container_port == number),
            "port {name} ({number}) is not declared"
        );
    }
    let resources = container.resources.as_ref().context("no resources")?;
    ensure!(
        resources
            .requests
            .as_ref()
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    ensure!(
        resources
            .limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory"))
    );

    // The host's BPF filesystem, where --bpffs pins.
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|volume| {
            volume
                .host_path
                .as_ref()
                .is_some_and(|host| host.path == "/sys/fs/bpf")
        })
        .context("no hostPath volume of /sys/fs/bpf")?;
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == volume.name)
        .context("the BPF filesystem is not mounted")?;
    ensure!(mount.mount_path == "/sys/fs/bpf");
    ensure!(
        mount.read_only != Some(true),
        "pins need a writable BPF filesystem"
    );
    let bpffs = flag(container, "bpffs").context("no --bpffs")?;
    ensure!(
        bpffs.starts_with("/sys/fs/bpf/"),
        "--bpffs {bpffs} is not on the mounted BPF filesystem"
    );

    // SIGKILL only after the drain.
    let grace: i64 = flag(container, "shutdown-grace-period")
        .context("no --shutdown-grace-period")?
        .parse()?;
    let termination = pod
        .termination_grace_period_seconds
        .context("no terminationGracePeriodSeconds")?;
    ensure!(
        termination > grace,
        "terminationGracePeriodSeconds {termination} leaves no time after the {grace} s drain"
    );
    Ok(())
}

/// One API call a role allows: a verb on a resource of an API group, on
/// every object or only on the named one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    group: String,
    resource: String,
    verb: String,
    name: Option<String>,
}

impl Grant {
    fn new(group: &str, resource: &str, verb: &str, name: Option<&str>) -> Self {
        Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
            verb: verb.to_owned(),
            name: name.map(str::to_owned),
        }
    }
}

/// Every grant of `rules`, one per group, resource, verb and name.
fn grants(rules: &[PolicyRule]) -> Result<BTreeSet<Grant>> {
    let mut grants = BTreeSet::new();
    for rule in rules {
        ensure!(
            rule.non_resource_urls.is_none(),
            "a non-resource URL is granted"
        );
        let names: Vec<Option<&str>> = match &rule.resource_names {
            Some(names) => names.iter().map(|name| Some(name.as_str())).collect(),
            None => vec![None],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    ensure!(
                        group != "*" && resource != "*" && verb != "*",
                        "a wildcard is granted"
                    );
                    for name in &names {
                        grants.insert(Grant::new(group, resource, verb, *name));
                    }
                }
            }
        }
    }
    Ok(grants)
}

fn the_service_account() -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: NAME.to_owned(),
        namespace: Some(NAMESPACE.to_owned()),
        api_group: None,
    }]
}

#[test]
fn every_manifest_parses_strictly_into_its_type() -> Result<()> {
    for kustomization in ["", "overlays/privileged", "overlays/nodeport"] {
        let rendered = Rendered::of(kustomization)?;
        ensure!(!rendered.objects.is_empty());
        for object in &rendered.objects {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str);
            ensure!(
                namespace.is_none() || namespace == Some(NAMESPACE),
                "{} is outside the {NAMESPACE} namespace",
                describe(object)
            );
        }
    }
    // The manifests-mode example is not rendered by kustomize; its objects
    // are read by the daemon and must be as valid.
    let example = std::fs::read_to_string(deploy_dir().join("examples/quickstart.yaml"))?;
    check_strictly_typed(&parse_documents(&example)?).context("deploy/examples/quickstart.yaml")?;
    Ok(())
}

#[test]
fn strict_parsing_rejects_unknown_and_misspelled_fields() -> Result<()> {
    let good = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "xdp"},
        "spec": {"controller": "xdp-ingress.io/controller"},
    });
    strict::<IngressClass>(&good)?;
    let mut misspelled = good.clone();
    misspelled["spec"]["controler"] = misspelled["spec"]["controller"].take();
    misspelled["spec"]
        .as_object_mut()
        .expect("an object")
        .remove("controller");
    let error = strict::<IngressClass>(&misspelled).expect_err("a misspelled field passed");
    ensure!(
        format!("{error:#}").contains("/spec/controler"),
        "{error:#}"
    );
    let mut misplaced = good;
    misplaced["metadata"]["controller"] = "xdp-ingress.io/controller".into();
    ensure!(
        strict::<IngressClass>(&misplaced).is_err(),
        "a misplaced field passed"
    );
    Ok(())
}

#[test]
fn every_file_in_deploy_is_used_by_a_kustomization() -> Result<()> {
    let root = deploy_dir().canonicalize()?;
    let mut files = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut pending = vec![root.clone()];
    // deploy/ is a few directories deep; the bound is for safety only.
    for _ in 0..1000 {
        let Some(dir) = pending.pop() else { break };
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .is_some_and(|name| name == "kustomization.yaml")
            {
                let kustomization: Value =
                    serde_yaml_ng::from_str(&std::fs::read_to_string(&path)?)?;
                let resources = kustomization["resources"].as_array().into_iter().flatten();
                let patches = kustomization["patches"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|patch| &patch["path"]);
                for reference in resources.chain(patches) {
                    let reference = reference.as_str().context("a reference is not a string")?;
                    used.insert(dir.join(reference).canonicalize().with_context(|| {
                        format!("{} refers to the missing {reference}", path.display())
                    })?);
                }
            } else {
                files.insert(path);
            }
        }
    }
    ensure!(pending.is_empty(), "deploy/ is deeper than expected");
    // The manifests-mode example is for `xdp-ingress run --manifests`.
    files.remove(&root.join("examples/quickstart.yaml"));
    let unused: Vec<_> = files.difference(&used).collect();
    ensure!(
        unused.is_empty(),
        "files no kustomization renders: {unused:?}"
    );
    Ok(())
}

#[test]
fn the_daemonset_runs_on_the_host_network_with_the_bpf_capabilities() -> Result<()> {
    let rendered = Rendered::of("")?;
    let daemonset = rendered.one::<DaemonSet>()?;
    ensure!(daemonset.metadata.namespace.as_deref() == Some(NAMESPACE));
    let pod = pod_spec_of_daemonset(&daemonset)?;
    check_controller_pod(pod)?;
    ensure!(pod.host_network == Some(true), "not on the host network");
    ensure!(pod.dns_policy.as_deref() == Some("ClusterFirstWithHostNet"));
    let container = the_container(pod)?;
    ensure!(flag(container, "bpffs") == Some("/sys/fs/bpf/xdp-ingress"));
    ensure!(
        flag(container, "xdp-mode").is_none(),
        "on the node's NIC, auto (native first) is the daemon's default"
    );

    let spec = &daemonset.spec;
    let strategy = spec
        .update_strategy
        .as_ref()
        .context("no update strategy")?;
    ensure!(strategy.type_.as_deref() == Some("RollingUpdate"));
    let rolling = strategy
        .rolling_update
        .as_ref()
        .context("no rollingUpdate")?;
    ensure!(rolling.max_unavailable == Some(IntOrString::Int(1)));
    ensure!(
        rolling.max_surge == Some(IntOrString::Int(0)),
        "a surge pod cannot bind the node's ports"
    );
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    ensure!(
        spec.selector.match_labels.as_ref().is_some_and(|selector| {
            selector
                .iter()
                .all(|(key, value)| labels.as_ref().and_then(|l| l.get(key)) == Some(value))
        }),
        "the selector does not select the pods"
    );

    let namespace = rendered.one::<Namespace>()?;
    ensure!(namespace.metadata.name.as_deref() == Some(NAMESPACE));
    let service_account = rendered.one::<ServiceAccount>()?;
    ensure!(service_account.metadata.name.as_deref() == Some(NAME));
    ensure!(service_account.metadata.namespace.as_deref() == Some(NAMESPACE));
    Ok(())
}

#[test]
fn the_ingress_class_is_xdp_with_our_controller_and_not_the_default() -> Result<()> {
    let class = Rendered::of("")?.one::<IngressClass>()?;
    ensure!(class.metadata.name.as_deref() == Some("xdp"));
    let spec = class.spec.context("no spec")?;
    ensure!(spec.controller.as_deref() == Some("xdp-ingress.io/controller"));
    let default = class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"));
    ensure!(default.map(String::as_str) == Some("false"), "{default:?}");
    Ok(())
}

#[test]
fn rbac_grants_exactly_the_api_calls_the_controller_makes() -> Result<()> {
    let rendered = Rendered::of("")?;

    let cluster_role = rendered.one::<ClusterRole>()?;
    ensure!(cluster_role.aggregation_rule.is_none());
    let granted = grants(cluster_role.rules.as_deref().unwrap_or_default())?;
    let wanted: BTreeSet<Grant> = CLUSTER_CALLS
        .iter()
        .map(|(group, resource, verb)| Grant::new(group, resource, verb, None))
        .collect();
    ensure!(
        granted == wanted,
        "the ClusterRole grants more: {:?}; less: {:?}",
        granted.difference(&wanted).collect::<Vec<_>>(),
        wanted.difference(&granted).collect::<Vec<_>>()
    );

    let role = rendered.one::<Role>()?;
    ensure!(role.metadata.namespace.as_deref() == Some(NAMESPACE));
    let granted = grants(role.rules.as_deref().unwrap_or_default())?;
    let wanted: BTreeSet<Grant> = NAMESPACE_CALLS
        .iter()
        .map(|(group, resource, verb, name)| Grant::new(group, resource, verb, *name))
        .collect();
    ensure!(
        granted == wanted,
        "the Role grants more: {:?}; less: {:?}",
        granted.difference(&wanted).collect::<Vec<_>>(),
        wanted.difference(&granted).collect::<Vec<_>>()
    );

    let cluster_binding = rendered.one::<ClusterRoleBinding>()?;
    ensure!(cluster_binding.role_ref.kind == "ClusterRole");
    ensure!(Some(&cluster_binding.role_ref.name) == cluster_role.metadata.name.as_ref());
    ensure!(cluster_binding.subjects == Some(the_service_account()));
    let binding = rendered.one::<RoleBinding>()?;
    ensure!(binding.metadata.namespace.as_deref() == Some(NAMESPACE));
    ensure!(binding.role_ref.kind == "Role");
    ensure!(Some(&binding.role_ref.name) == role.metadata.name.as_ref());
    ensure!(binding.subjects == Some(the_service_account()));
    Ok(())
}

#[test]
fn the_privileged_overlay_only_makes_the_container_privileged() -> Result<()> {
    let base = Rendered::of("")?;
    let privileged = Rendered::of("overlays/privileged")?;
    ensure!(
        base.except::<DaemonSet>() == privileged.except::<DaemonSet>(),
        "the overlay changes more than the DaemonSet"
    );

    // The base's DaemonSet with the changes the overlay claims must be the
    // overlay's DaemonSet, field for field.
    let mut expected = base.one::<DaemonSet>()?;
    let pod = expected
        .spec
        .template
        .spec
        .as_mut()
        .context("no pod spec")?;
    let container = &mut pod.containers[0];
    let context = container
        .security_context
        .as_mut()
        .context("no securityContext")?;
    context.privileged = Some(true);
    context.capabilities = None;
    context.allow_privilege_escalation = None;
    let mount = container
        .volume_mounts
        .iter_mut()
        .flatten()
        .find(|mount| mount.mount_path == "/sys/fs/bpf")
        .context("no BPF filesystem mount")?;
    mount.mount_propagation = Some("Bidirectional".to_owned());
    let actual = privileged.one::<DaemonSet>()?;
    ensure!(
        actual == expected,
        "the privileged DaemonSet differs from the base beyond the overlay's claims:\n{}",
        difference(
            &serde_json::to_value(&actual)?,
            &serde_json::to_value(&expected)?,
            ""
        )
        .join("\n")
    );
    Ok(())
}

#[test]
fn the_nodeport_overlay_is_a_deployment_behind_a_nodeport_service() -> Result<()> {
    let base = Rendered::of("")?;
    let nodeport = Rendered::of("overlays/nodeport")?;
    ensure!(
        nodeport.all::<DaemonSet>()?.is_empty(),
        "the DaemonSet is still there"
    );
    let unchanged: Vec<&Value> = nodeport
        .except::<Deployment>()
        .into_iter()
        .filter(|object| !is::<Service>(object))
        .collect();
    ensure!(
        unchanged == base.except::<DaemonSet>(),
        "the overlay changes more than the workload"
    );

    let deployment = nodeport.one::<Deployment>()?;
    ensure!(deployment.metadata.namespace.as_deref() == Some(NAMESPACE));
    let spec = &deployment.spec;
    ensure!(
        spec.replicas.is_some_and(|replicas| replicas >= 2),
        "one replica is no redundancy"
    );
    let pod = spec.template.spec.as_ref().context("no pod spec")?;
    check_controller_pod(pod)?;
    ensure!(
        pod.host_network.is_none(),
        "a NodePort replica uses the pod network"
    );
    ensure!(pod.dns_policy.is_none());
    let container = the_container(pod)?;
    ensure!(
        flag(container, "interface") == Some("eth0"),
        "XDP on the pod's eth0"
    );
    ensure!(
        matches!(flag(container, "xdp-mode"), Some("auto" | "skb")),
        "a veth may refuse native XDP"
    );
    ensure!(
        flag(container, "bpffs").is_some_and(|dir| dir.contains("$(POD_NAME)")),
        "replicas on one node need their own pin directories"
    );

    // The same container as the DaemonSet's but for the arguments that
    // place it on the pod network.
    let daemonset = base.one::<DaemonSet>()?;
    let mut same = the_container(pod_spec_of_daemonset(&daemonset)?)?.clone();
    same.args = container.args.clone();
    ensure!(
        *container == same,
        "the Deployment's container differs from the DaemonSet's:\n{}",
        difference(
            &serde_json::to_value(container)?,
            &serde_json::to_value(&same)?,
            ""
        )
        .join("\n")
    );

    let service = nodeport.one::<Service>()?;
    let service_spec = service.spec.as_ref().context("no spec")?;
    ensure!(service_spec.type_.as_deref() == Some("NodePort"));
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = service_spec.selector.clone().unwrap_or_default();
    ensure!(
        !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the Service does not select the Deployment's pods"
    );
    ensure!(Some(&selector) == spec.selector.match_labels.as_ref());
    let ports: BTreeSet<(i32, String)> = service_spec
        .ports
        .iter()
        .flatten()
        .map(|port: &ServicePort| {
            let target = match &port.target_port {
                Some(IntOrString::String(name)) => name.clone(),
                other => format!("{other:?}"),
            };
            (port.port, target)
        })
        .collect();
    ensure!(
        ports == BTreeSet::from([(80, "http".to_owned()), (443, "https".to_owned())]),
        "the Service's ports: {ports:?}"
    );
    Ok(())
}

#[test]
fn the_api_server_accepts_every_kustomization() -> Result<()> {
    // A real kube-apiserver (the cluster tests' harness) validates what
    // kubectl kustomize renders: schemas, RBAC objects, pod security.
    let cluster = xdp_ingress_lab::k8s::TestCluster::start()?;
    // A server-side dry run creates nothing, so the namespaced objects need
    // their namespace to exist already.
    cluster.kubectl(&["create", "namespace", NAMESPACE])?;
    for kustomization in ["", "overlays/privileged", "overlays/nodeport"] {
        let dir = deploy_dir().join(kustomization).display().to_string();
        let report = cluster
            .kubectl(&["apply", "-k", &dir, "--dry-run=server"])
            .with_context(|| format!("kubectl apply -k deploy/{kustomization} --dry-run=server"))?;
        ensure!(
            report.contains("daemonset.apps/xdp-ingress")
                || report.contains("deployment.apps/xdp-ingress"),
            "deploy/{kustomization}: {report}"
        );
        ensure!(report.contains("(server dry run)"), "{report}");
    }
    Ok(())
}
