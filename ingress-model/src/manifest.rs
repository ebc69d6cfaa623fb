//! Reading objects from manifest text: multi-document YAML, or JSON (one or
//! more values, arrays of objects too). Pure: the caller reads the file.
//!
//! - `List` kinds (`kind: List`, `kind: IngressList`, ...) are flattened;
//!   items of a typed list may leave out `apiVersion` and `kind`.
//! - Kinds the model does not read come back as [`KubeObject::Skipped`]
//!   notes for the caller to log.
//! - A kind the model reads under another `apiVersion` (an
//!   `extensions/v1beta1` Ingress, say) is an error: silently ignoring it
//!   would hide routes.
//! - A namespaced object without `metadata.namespace` gets the `default`
//!   namespace, as `kubectl apply` does with the default context.
//! - The first error ends the parse; it carries the source name and the
//!   line: of the error itself for syntax and field errors in YAML and
//!   syntax errors in JSON, else of the document.

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Namespace, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::object::{DEFAULT_NAMESPACE, KubeObject, ObjectKind, SkippedObject};

/// Why a manifest could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {reason}")]
pub struct ManifestError {
    /// The source name given to [`parse_manifests`].
    pub source_name: String,
    /// The line, 1-based.
    pub line: usize,
    /// What is wrong.
    pub reason: ManifestErrorReason,
}

/// What is wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestErrorReason {
    /// The text is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The text is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A document is not a mapping.
    #[error("a document must be an object, not {0}")]
    NotAnObject(&'static str),
    /// A document lacks a required field (`apiVersion`, `kind`,
    /// `metadata.name`).
    #[error("missing {0}")]
    MissingField(&'static str),
    /// A kind the model reads, under an `apiVersion` it does not.
    #[error("{kind} {api_version} is not supported; use apiVersion {expected}")]
    UnsupportedApiVersion {
        /// The kind.
        kind: String,
        /// The `apiVersion` found.
        api_version: String,
        /// The one the model reads.
        expected: &'static str,
    },
    /// The object does not fit its kind's schema.
    #[error("invalid {kind}: {message}")]
    InvalidObject {
        /// The kind.
        kind: &'static str,
        /// What the decoder said.
        message: String,
    },
}

/// Reads every object in `text`. `source_name` (a file name, say) only
/// labels errors and skipped notes.
pub fn parse_manifests(source_name: &str, text: &str) -> Result<Vec<KubeObject>, ManifestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser {
        source_name,
        objects: Vec::new(),
    };
    if text.trim_start().starts_with(['{', '[']) {
        parser.parse_json(text)?;
    } else {
        parser.parse_yaml(text)?;
    }
    Ok(parser.objects)
}

struct Parser<'a> {
    source_name: &'a str,
    objects: Vec<KubeObject>,
}

/// Where the typed decode of one object reads from: the document's own
/// text (YAML, so field errors keep their line) or a value already parsed.
enum Source<'t> {
    YamlText { text: &'t str, first_line: usize },
    Value(Value),
}

impl Parser<'_> {
    fn error(&self, line: usize, reason: ManifestErrorReason) -> ManifestError {
        ManifestError {
            source_name: self.source_name.to_owned(),
            line,
            reason,
        }
    }

    fn parse_yaml(&mut self, text: &str) -> Result<(), ManifestError> {
        for document in split_yaml_documents(text) {
            let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(document.text)
                .map_err(|e| self.yaml_error(&document, &e))?;
            if value.is_null() {
                continue;
            }
            let line = document.content_line;
            let value: Value = serde_json::to_value(&value)
                .map_err(|e| self.error(line, ManifestErrorReason::Yaml(e.to_string())))?;
            let source = Source::YamlText {
                text: document.text,
                first_line: document.first_line,
            };
            self.add_document(line, value, source)?;
        }
        Ok(())
    }

    fn parse_json(&mut self, text: &str) -> Result<(), ManifestError> {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        loop {
            let start = stream.byte_offset();
            let Some(next) = stream.next() else {
                return Ok(());
            };
            let value = next.map_err(|e| {
                self.error(
                    e.line().max(1),
                    ManifestErrorReason::Json(strip_position(&e.to_string())),
                )
            })?;
            let skipped = text[start..].len() - text[start..].trim_start().len();
            let line = line_of(text, start + skipped);
            match value {
                Value::Array(items) => {
                    for item in items {
                        self.add_document(line, item.clone(), Source::Value(item))?;
                    }
                }
                value => self.add_document(line, value.clone(), Source::Value(value))?,
            }
        }
    }

    fn yaml_error(
        &self,
        document: &YamlDocument<'_>,
        error: &serde_yaml_ng::Error,
    ) -> ManifestError {
        let line = error.location().map_or(document.content_line, |l| {
            document.first_line + l.line() - 1
        });
        self.error(
            line,
            ManifestErrorReason::Yaml(strip_position(&error.to_string())),
        )
    }

    /// Adds one document (or the items of a list) found at `line`.
    fn add_document(
        &mut self,
        line: usize,
        value: Value,
        source: Source<'_>,
    ) -> Result<(), ManifestError> {
        let Value::Object(map) = &value else {
            return Err(self.error(line, ManifestErrorReason::NotAnObject(json_type(&value))));
        };
        let api_version = map.get("apiVersion").and_then(Value::as_str);
        let kind = map.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            let field = if api_version.is_none() {
                "apiVersion"
            } else {
                "kind"
            };
            return Err(self.error(line, ManifestErrorReason::MissingField(field)));
        };
        if let Some(item_kind) = kind.strip_suffix("List")
            && let Some(items) = map.get("items")
        {
            let Value::Array(items) = items else {
                return Err(self.error(line, ManifestErrorReason::NotAnObject(json_type(items))));
            };
            for item in items {
                let mut item = item.clone();
                if let Value::Object(fields) = &mut item
                    && !item_kind.is_empty()
                {
                    // Items of a typed list (IngressList) may leave their
                    // type out.
                    fields
                        .entry("apiVersion")
                        .or_insert_with(|| Value::from(api_version));
                    fields
                        .entry("kind")
                        .or_insert_with(|| Value::from(item_kind));
                }
                self.add_document(line, item.clone(), Source::Value(item))?;
            }
            return Ok(());
        }
        let Some(object_kind) = ObjectKind::from_kind(kind) else {
            let name = map
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            self.objects.push(KubeObject::Skipped(SkippedObject {
                source_name: self.source_name.to_owned(),
                line,
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                name,
            }));
            return Ok(());
        };
        if api_version != object_kind.api_version() {
            return Err(self.error(
                line,
                ManifestErrorReason::UnsupportedApiVersion {
                    kind: kind.to_owned(),
                    api_version: api_version.to_owned(),
                    expected: object_kind.api_version(),
                },
            ));
        }
        let object = match object_kind {
            ObjectKind::Ingress => {
                KubeObject::Ingress(self.decode::<Ingress>(object_kind, line, source)?)
            }
            ObjectKind::IngressClass => {
                KubeObject::IngressClass(self.decode::<IngressClass>(object_kind, line, source)?)
            }
            ObjectKind::Service => {
                KubeObject::Service(self.decode::<Service>(object_kind, line, source)?)
            }
            ObjectKind::EndpointSlice => KubeObject::EndpointSlice(self.decode::<EndpointSlice>(
                object_kind,
                line,
                source,
            )?),
            ObjectKind::Secret => {
                KubeObject::Secret(self.decode::<Secret>(object_kind, line, source)?)
            }
            ObjectKind::ConfigMap => {
                KubeObject::ConfigMap(self.decode::<ConfigMap>(object_kind, line, source)?)
            }
            ObjectKind::Namespace => {
                KubeObject::Namespace(self.decode::<Namespace>(object_kind, line, source)?)
            }
        };
        self.objects.push(object);
        Ok(())
    }

    /// Decodes a typed object, then checks its name and fills a missing
    /// namespace.
    fn decode<T>(
        &self,
        kind: ObjectKind,
        line: usize,
        source: Source<'_>,
    ) -> Result<T, ManifestError>
    where
        T: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        let invalid = |line: usize, message: String| {
            self.error(
                line,
                ManifestErrorReason::InvalidObject {
                    kind: kind.as_str(),
                    message,
                },
            )
        };
        let mut object: T = match source {
            Source::YamlText { text, first_line } => {
                serde_yaml_ng::from_str(text).map_err(|e| {
                    let at = e.location().map_or(line, |l| first_line + l.line() - 1);
                    invalid(at, strip_position(&e.to_string()))
                })?
            }
            Source::Value(value) => serde_json::from_value(value)
                .map_err(|e| invalid(line, strip_position(&e.to_string())))?,
        };
        let metadata = object.metadata_mut();
        if metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(self.error(line, ManifestErrorReason::MissingField("metadata.name")));
        }
        if kind.is_namespaced() && metadata.namespace.as_deref().unwrap_or_default().is_empty() {
            metadata.namespace = Some(DEFAULT_NAMESPACE.to_owned());
        }
        Ok(object)
    }
}

/// One YAML document of a multi-document text.
struct YamlDocument<'t> {
    /// The document's text, its `---` line included.
    text: &'t str,
    /// The line `text` starts on.
    first_line: usize,
    /// The first line with content (not blank, a comment or `---`).
    content_line: usize,
}

/// Splits at `---` lines (and drops `...` end markers). Such lines always
/// start a document at column 0: inside a block scalar they would be
/// indented.
fn split_yaml_documents(text: &str) -> Vec<YamlDocument<'_>> {
    let mut documents = Vec::new();
    let mut start: Option<(usize, usize)> = Some((0, 1));
    let mut content_line: Option<usize> = None;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let is_marker = |marker: &str| {
            line.strip_prefix(marker)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        };
        if is_marker("---") || is_marker("...") {
            if let Some((begin, first_line)) = start.take() {
                documents.push(YamlDocument {
                    text: &text[begin..offset],
                    first_line,
                    content_line: content_line.unwrap_or(first_line),
                });
            }
            content_line = None;
            if is_marker("---") {
                start = Some((offset, number));
                // `--- {a: 1}` keeps content on the marker line.
                let rest = line[3..].trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    content_line = Some(number);
                }
            }
        } else {
            let trimmed = line.trim();
            if start.is_none() && !trimmed.is_empty() && !trimmed.starts_with('#') {
                // Content after a `...` without a new `---`.
                start = Some((offset, number));
            }
            if content_line.is_none() && !trimmed.is_empty() && !trimmed.starts_with('#') {
                content_line = Some(number);
            }
        }
        offset += line.len();
    }
    if let Some((begin, first_line)) = start {
        documents.push(YamlDocument {
            text: &text[begin..],
            first_line,
            content_line: content_line.unwrap_or(first_line),
        });
    }
    documents
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// Drops the decoder's own " at line N column M" (its lines count from the
/// document, ours from the source).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::{object::ObjectKey, snapshot::ClusterObjects};

    const MIXED: &str = r#"# ingress for the web app
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
spec:
  ingressClassName: xdp
  rules:
    - host: shop.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: web
                port:
                  name: http
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  ports:
    - name: http
      port: 80
      targetPort: web
---
# only a comment
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
...
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x1
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports: null
endpoints:
  - addresses: ["10.0.0.1"]
    conditions: {ready: true}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: xdp
spec:
  controller: xdp-ingress.io/controller
---
apiVersion: v1
kind: Secret
metadata:
  name: tls
data:
  tls.crt: aGVsbG8=
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: xdp-ingress
data:
  proxy-body-size: 8m
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  # A namespace stays for a while, being deleted, then is gone.
  deletionTimestamp: "2026-01-02T03:04:05Z"
status:
  phase: Terminating
"#;

    #[test]
    fn reads_every_supported_kind_and_notes_the_others() {
        let objects = parse_manifests("mixed.yaml", MIXED).unwrap();
        let kinds: Vec<String> = objects
            .iter()
            .map(|o| match o {
                KubeObject::Skipped(s) => format!("skipped {} at {}", s.kind, s.line),
                o => o.object_ref().unwrap().to_string(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Ingress shop/web",
                "Service shop/web",
                "skipped Deployment at 34",
                "EndpointSlice shop/web-x1",
                "IngressClass xdp",
                "Secret default/tls",
                "ConfigMap xdp-ingress/settings",
                "Namespace shop",
            ]
        );
        let KubeObject::Service(service) = &objects[1] else {
            panic!("not a service");
        };
        let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.target_port, Some(IntOrString::String("web".into())));
        let KubeObject::Secret(secret) = &objects[5] else {
            panic!("not a secret");
        };
        assert_eq!(secret.data.as_ref().unwrap()["tls.crt"].0, b"hello");
        let (snapshot, problems) = ClusterObjects::from_objects(objects);
        assert!(problems.is_empty());
        assert_eq!(snapshot.len(), 7);
        assert!(snapshot.namespace_going_away("shop"));
        assert!(
            !snapshot.namespace_going_away("default"),
            "not listed: live"
        );
        assert!(
            snapshot
                .secrets
                .contains_key(&ObjectKey::new("default", "tls"))
        );
    }

    #[test]
    fn errors_carry_the_source_and_line() {
        let cases: &[(&str, usize, &str)] = &[
            // A syntax error on line 4.
            (
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: a: b\n",
                4,
                "invalid YAML",
            ),
            // The second document (its content on line 5) has no kind.
            (
                "kind: ConfigMap\napiVersion: v1\nmetadata: {name: a}\n---\napiVersion: v1\n",
                5,
                "missing kind",
            ),
            ("---\n\n# c\nkind: Service\n", 4, "missing apiVersion"),
            (
                "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: a\n",
                1,
                "missing metadata.name",
            ),
            (
                "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: a}\n",
                1,
                "Ingress extensions/v1beta1 is not supported",
            ),
            // A field of the wrong type, on line 6.
            (
                "# header\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: 3}\n",
                6,
                "invalid Service",
            ),
            ("- a\n- b\n", 1, "must be an object"),
        ];
        for (text, line, message) in cases {
            let error = parse_manifests("in.yaml", text).unwrap_err();
            assert_eq!(error.source_name, "in.yaml", "{text}");
            assert_eq!(error.line, *line, "{text}: {error}");
            assert!(error.to_string().contains(message), "{text}: {error}");
            assert!(error.to_string().starts_with(&format!("in.yaml:{line}: ")));
        }
    }

    #[test]
    fn reads_json_values_arrays_and_lists() {
        let text = r#"
{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}}
[{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}}]
{"apiVersion": "networking.k8s.io/v1", "kind": "IngressList", "items": [
  {"metadata": {"name": "c", "namespace": "n"}, "spec": {"ingressClassName": "xdp"}}
]}
{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}},
  {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "e"}}
]}
"#;
        let objects = parse_manifests("objects.json", text).unwrap();
        let names: Vec<String> = objects
            .iter()
            .map(|o| match o {
                KubeObject::Skipped(s) => format!("{s}"),
                o => o.object_ref().unwrap().to_string(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "Service n/a",
                "Service default/b",
                "Ingress n/c",
                "ConfigMap default/d",
                "objects.json:7: skipped apps/v1 Deployment e",
            ]
        );
    }

    #[test]
    fn json_errors_carry_the_line() {
        let text = "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"a\"}}\n{\n  \"kind\": \"Service\",\n  oops\n}\n";
        let error = parse_manifests("x.json", text).unwrap_err();
        assert_eq!(error.line, 4, "{error}");
        assert!(matches!(error.reason, ManifestErrorReason::Json(_)));
        let text =
            "\n\n{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": 3}}";
        let error = parse_manifests("x.json", text).unwrap_err();
        assert_eq!(error.line, 3, "{error}");
        assert!(matches!(
            error.reason,
            ManifestErrorReason::InvalidObject { .. }
        ));
    }

    #[test]
    fn empty_and_comment_only_sources_have_no_objects() {
        for text in [
            "",
            "\n",
            "# nothing\n",
            "---\n---\n",
            "...\n",
            "\u{feff}---\n# c\n",
        ] {
            assert_eq!(parse_manifests("e.yaml", text).unwrap(), [], "{text:?}");
        }
    }

    #[test]
    fn document_splitting_keeps_lines_and_inline_content() {
        let text = "a: 1\n---\nb: 2\n--- {c: 3}\n...\n# tail\nd: 4\n";
        let documents = split_yaml_documents(text);
        let summary: Vec<(usize, usize)> = documents
            .iter()
            .map(|d| (d.first_line, d.content_line))
            .collect();
        assert_eq!(summary, [(1, 1), (2, 3), (4, 4), (7, 7)]);
        assert_eq!(documents[2].text, "--- {c: 3}\n");
    }

    #[test]
    fn crlf_line_endings_are_read() {
        let text = "apiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: a\r\n---\r\napiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: b\r\n";
        let objects = parse_manifests("crlf.yaml", text).unwrap();
        assert_eq!(objects.len(), 2);
    }
}
