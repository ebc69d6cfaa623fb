//! Which Ingresses are ours: the class rules of the Ingress spec.
//!
//! Precedence follows ingress-nginx: the legacy `kubernetes.io/ingress.class`
//! annotation first (the API server rejects an Ingress whose annotation and
//! `spec.ingressClassName` differ, but files are not validated), then
//! `spec.ingressClassName`, then the default-class rule for an Ingress that
//! names no class.

use std::fmt;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::{object::ObjectKey, options::ModelOptions, snapshot::ClusterObjects};

/// The legacy annotation naming an Ingress's class.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The annotation that makes an IngressClass the cluster's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Why an Ingress is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassMatch {
    /// `spec.ingressClassName` or the annotation names an IngressClass whose
    /// controller is ours.
    IngressClass(String),
    /// The legacy annotation names our class name directly.
    AnnotationClassName(String),
    /// The Ingress names no class and one of our IngressClasses is the
    /// default class.
    DefaultClass(String),
    /// The Ingress names no class and we watch such Ingresses.
    WithoutClass,
}

/// Why an Ingress is not ours. Not a problem: such Ingresses belong to
/// another controller; this is for debug logs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassMismatch {
    /// The named IngressClass does not exist (and, for the annotation, is
    /// not our class name).
    ClassNotFound(String),
    /// The named IngressClass belongs to another controller.
    OtherController {
        /// The class.
        class: String,
        /// Its `spec.controller`, if set.
        controller: Option<String>,
    },
    /// The Ingress names no class, none of our classes is the default and we
    /// do not watch Ingresses without a class.
    NoClass,
}

impl fmt::Display for ClassMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassMismatch::ClassNotFound(class) => write!(f, "IngressClass {class:?} not found"),
            ClassMismatch::OtherController { class, controller } => write!(
                f,
                "IngressClass {class:?} belongs to controller {:?}",
                controller.as_deref().unwrap_or_default()
            ),
            ClassMismatch::NoClass => f.write_str("no class, and no default class of ours"),
        }
    }
}

/// An Ingress that is not ours, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredIngress {
    /// The Ingress.
    pub ingress: ObjectKey,
    /// Why it is not ours.
    pub reason: ClassMismatch,
}

/// The Ingresses of a snapshot split into ours and the others.
#[derive(Debug, Clone, Default)]
pub struct IngressSelection<'a> {
    /// Our Ingresses, by key.
    pub ours: Vec<(&'a ObjectKey, &'a Ingress)>,
    /// The others, by key.
    pub ignored: Vec<IgnoredIngress>,
}

/// Splits the snapshot's Ingresses into ours and the ignored ones.
pub fn select_ingresses<'a>(
    objects: &'a ClusterObjects,
    options: &ModelOptions,
) -> IngressSelection<'a> {
    let mut selection = IngressSelection::default();
    for (key, ingress) in &objects.ingresses {
        match classify_ingress(ingress, objects, options) {
            Ok(_) => selection.ours.push((key, &**ingress)),
            Err(reason) => selection.ignored.push(IgnoredIngress {
                ingress: key.clone(),
                reason,
            }),
        }
    }
    selection
}

/// Decides whether one Ingress is ours.
pub fn classify_ingress(
    ingress: &Ingress,
    objects: &ClusterObjects,
    options: &ModelOptions,
) -> Result<ClassMatch, ClassMismatch> {
    let annotation = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION))
        .filter(|value| !value.is_empty());
    if let Some(class) = annotation {
        return match class_owner(class, objects, options) {
            Ok(found) => Ok(found),
            Err(_) if *class == options.ingress_class => {
                Ok(ClassMatch::AnnotationClassName(class.clone()))
            }
            Err(mismatch) => Err(mismatch),
        };
    }
    let class_name = ingress
        .spec
        .as_ref()
        .and_then(|spec| spec.ingress_class_name.as_ref())
        .filter(|value| !value.is_empty());
    if let Some(class) = class_name {
        return class_owner(class, objects, options);
    }
    if let Some(default) = objects
        .ingress_classes
        .values()
        .find(|class| is_ours(class, options) && is_default_class(class))
    {
        let name = default.metadata.name.clone().unwrap_or_default();
        return Ok(ClassMatch::DefaultClass(name));
    }
    if options.watch_ingress_without_class {
        return Ok(ClassMatch::WithoutClass);
    }
    Err(ClassMismatch::NoClass)
}

fn class_owner(
    class: &str,
    objects: &ClusterObjects,
    options: &ModelOptions,
) -> Result<ClassMatch, ClassMismatch> {
    let Some(found) = objects.ingress_classes.get(&ObjectKey::cluster(class)) else {
        return Err(ClassMismatch::ClassNotFound(class.to_owned()));
    };
    if is_ours(found, options) {
        Ok(ClassMatch::IngressClass(class.to_owned()))
    } else {
        Err(ClassMismatch::OtherController {
            class: class.to_owned(),
            controller: found.spec.as_ref().and_then(|s| s.controller.clone()),
        })
    }
}

fn is_ours(class: &IngressClass, options: &ModelOptions) -> bool {
    class
        .spec
        .as_ref()
        .and_then(|spec| spec.controller.as_deref())
        == Some(options.controller_name.as_str())
}

fn is_default_class(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|value| value == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{ingress, ingress_class},
        object::KubeObject,
    };

    const OURS: &str = crate::options::CONTROLLER_NAME;
    const THEIRS: &str = "k8s.io/ingress-nginx";

    /// How an Ingress names its class in a case.
    #[derive(Clone, Copy)]
    enum Names {
        Nothing,
        Field(&'static str),
        Annotation(&'static str),
        Both(&'static str, &'static str),
    }

    struct Case {
        name: &'static str,
        /// (class name, controller, is default)
        classes: &'static [(&'static str, &'static str, bool)],
        names: Names,
        watch_without_class: bool,
        ours: bool,
    }

    #[test]
    fn class_selection_table() {
        let cases = [
            Case {
                name: "field names our class",
                classes: &[("xdp", OURS, false)],
                names: Names::Field("xdp"),
                watch_without_class: false,
                ours: true,
            },
            Case {
                name: "field names a class of ours under another name",
                classes: &[("fast", OURS, false)],
                names: Names::Field("fast"),
                watch_without_class: false,
                ours: true,
            },
            Case {
                name: "field names another controller's class",
                classes: &[("nginx", THEIRS, false), ("xdp", OURS, false)],
                names: Names::Field("nginx"),
                watch_without_class: false,
                ours: false,
            },
            Case {
                name: "field names a class that does not exist",
                classes: &[],
                names: Names::Field("xdp"),
                watch_without_class: true,
                ours: false,
            },
            Case {
                name: "annotation names our class name without an IngressClass",
                classes: &[],
                names: Names::Annotation("xdp"),
                watch_without_class: false,
                ours: true,
            },
            Case {
                name: "annotation names a class of ours",
                classes: &[("fast", OURS, false)],
                names: Names::Annotation("fast"),
                watch_without_class: false,
                ours: true,
            },
            Case {
                name: "annotation names another controller's class",
                classes: &[("nginx", THEIRS, false)],
                names: Names::Annotation("nginx"),
                watch_without_class: true,
                ours: false,
            },
            Case {
                name: "annotation names an unknown class",
                classes: &[],
                names: Names::Annotation("other"),
                watch_without_class: true,
                ours: false,
            },
            Case {
                name: "annotation wins over the field",
                classes: &[("nginx", THEIRS, false), ("xdp", OURS, false)],
                names: Names::Both("nginx", "xdp"),
                watch_without_class: false,
                ours: false,
            },
            Case {
                name: "no class, our class is the default",
                classes: &[("xdp", OURS, true)],
                names: Names::Nothing,
                watch_without_class: false,
                ours: true,
            },
            Case {
                name: "no class, another controller's class is the default",
                classes: &[("nginx", THEIRS, true), ("xdp", OURS, false)],
                names: Names::Nothing,
                watch_without_class: false,
                ours: false,
            },
            Case {
                name: "no class, no default, not watched",
                classes: &[("xdp", OURS, false)],
                names: Names::Nothing,
                watch_without_class: false,
                ours: false,
            },
            Case {
                name: "no class, watched without class",
                classes: &[],
                names: Names::Nothing,
                watch_without_class: true,
                ours: true,
            },
            Case {
                name: "empty field counts as no class",
                classes: &[("xdp", OURS, true)],
                names: Names::Field(""),
                watch_without_class: false,
                ours: true,
            },
        ];
        for case in cases {
            let mut objects = ClusterObjects::new();
            for (name, controller, default) in case.classes {
                objects.insert(KubeObject::IngressClass(ingress_class(
                    name, controller, *default,
                )));
            }
            let mut builder = ingress("ns", "web");
            builder = match case.names {
                Names::Nothing => builder,
                Names::Field(class) => builder.class_name(class),
                Names::Annotation(class) => builder.annotation(INGRESS_CLASS_ANNOTATION, class),
                Names::Both(annotation, field) => builder
                    .annotation(INGRESS_CLASS_ANNOTATION, annotation)
                    .class_name(field),
            };
            objects.insert(KubeObject::Ingress(builder.build()));
            let options = ModelOptions {
                watch_ingress_without_class: case.watch_without_class,
                ..ModelOptions::default()
            };
            let selection = select_ingresses(&objects, &options);
            assert_eq!(selection.ours.len() == 1, case.ours, "{}", case.name);
            assert_eq!(selection.ignored.len() == 1, !case.ours, "{}", case.name);
        }
    }

    #[test]
    fn a_custom_class_name_and_controller_are_honoured() {
        let mut objects = ClusterObjects::new();
        objects.insert(KubeObject::Ingress(
            ingress("ns", "a")
                .annotation(INGRESS_CLASS_ANNOTATION, "edge")
                .build(),
        ));
        objects.insert(KubeObject::IngressClass(ingress_class(
            "mine",
            "example.com/ctl",
            false,
        )));
        objects.insert(KubeObject::Ingress(
            ingress("ns", "b").class_name("mine").build(),
        ));
        let options = ModelOptions {
            controller_name: "example.com/ctl".into(),
            ingress_class: "edge".into(),
            ..ModelOptions::default()
        };
        let selection = select_ingresses(&objects, &options);
        assert_eq!(selection.ours.len(), 2);
    }

    #[test]
    fn ignored_reasons_say_why() {
        let mut objects = ClusterObjects::new();
        objects.insert(KubeObject::IngressClass(ingress_class(
            "nginx", THEIRS, false,
        )));
        let reasons: Vec<String> = [
            ingress("ns", "a").class_name("nginx").build(),
            ingress("ns", "b").class_name("gone").build(),
            ingress("ns", "c").build(),
        ]
        .iter()
        .map(|i| {
            classify_ingress(i, &objects, &ModelOptions::default())
                .unwrap_err()
                .to_string()
        })
        .collect();
        assert_eq!(
            reasons,
            [
                "IngressClass \"nginx\" belongs to controller \"k8s.io/ingress-nginx\"",
                "IngressClass \"gone\" not found",
                "no class, and no default class of ours",
            ]
        );
    }
}
