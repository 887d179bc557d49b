//! Checks answers against the host's own OpenAPI description: the route and
//! method are described, the status is one the operation lists, the content
//! type is one it lists for that status, and a JSON body matches its schema.
//!
//! The schemas are checked closed: a described object with a field the
//! description does not name fails, so the description says everything that
//! comes back, not only some of it. (Objects used as parts of an `allOf`, such
//! as `Presence` inside `PresenceView`, are closed by the schema that
//! combines them, with `unevaluatedProperties`.)

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde_json::Value;

pub struct SpecValidator {
    spec: Value,
    /// The components with every plain object closed (see the module doc).
    closed_components: Value,
    compiled: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

/// An answer as the checks see it.
pub struct Answer<'a> {
    pub method: &'a str,
    /// The request path, with or without a query.
    pub path: &'a str,
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The raw body.
    pub body: &'a [u8],
}

impl SpecValidator {
    pub fn new(spec: Value) -> Self {
        let closed_components = close_components(&spec["components"]);
        Self {
            spec,
            closed_components,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// The path template of the spec that `path` is an instance of: literal
    /// segments win over parameters (`/api/presence/stream` is not `{user}`).
    pub fn template_of(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        self.spec["paths"]
            .as_object()?
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literals = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literals += 1;
                    } else {
                        return None;
                    }
                }
                Some((literals, template.clone()))
            })
            .max()
            .map(|(_, template)| template)
    }

    /// Every (method, path template) the description lists.
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.spec["paths"].as_object().into_iter().flatten() {
            for method in [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ] {
                if item.get(method).is_some() {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    pub fn spec(&self) -> &Value {
        &self.spec
    }

    /// Whether the answer is what the description says; the reason when not.
    pub fn check(&self, answer: &Answer<'_>) -> Result<(), String> {
        let what = format!(
            "{} {} answered {}",
            answer.method, answer.path, answer.status
        );
        let Some(template) = self.template_of(answer.path) else {
            // The router's own "no such route": not an answer of the API.
            if answer.status == 404 && answer.body.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "{what}, but the OpenAPI description has no path {:?}",
                answer.path
            ));
        };
        let method = answer.method.to_lowercase();
        let Some(operation) = self.spec["paths"][&template].get(&method) else {
            if answer.status == 405 && answer.body.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "{what}, but the OpenAPI description has no {} on {template}",
                answer.method
            ));
        };
        let status = answer.status.to_string();
        let Some(response) = operation["responses"]
            .get(&status)
            .or_else(|| operation["responses"].get("default"))
        else {
            return Err(format!(
                "{what}, a status the OpenAPI description of {} {template} does not list (it lists {:?})",
                answer.method,
                operation["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            ));
        };
        if answer.body.is_empty() {
            return Ok(());
        }
        let media = answer
            .content_type
            .map(|t| media_type(t).to_string())
            .unwrap_or_default();
        let contents = response["content"].as_object();
        let Some((key, content)) = contents.into_iter().flatten().find(|(key, _)| {
            let key = media_type(key);
            key == media || key == "*/*"
        }) else {
            return Err(format!(
                "{what} with {media:?}, but its OpenAPI description lists {:?} for that status",
                contents
                    .map(|c| c.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            ));
        };
        if media != "application/json" {
            return Ok(());
        }
        let Some(schema) = content.get("schema") else {
            return Ok(());
        };
        let body: Value = serde_json::from_slice(answer.body)
            .map_err(|e| format!("{what} with a body that is not JSON ({e})"))?;
        let validator = self.compiled(&format!("{method} {template} {status} {key}"), schema)?;
        let problems: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("  at {:?}: {e}", e.instance_path().as_str()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: the body does not match the OpenAPI description's schema {}:\n{}\nbody: {}",
                schema,
                problems.join("\n"),
                serde_json::to_string_pretty(&body).unwrap_or_default()
            ))
        }
    }

    fn compiled(
        &self,
        key: &str,
        schema: &Value,
    ) -> Result<std::sync::Arc<jsonschema::Validator>, String> {
        if let Some(v) = self.compiled.lock().unwrap().get(key) {
            return Ok(v.clone());
        }
        // The response's schema, with the components beside it so that
        // `#/components/schemas/...` resolves in the same document.
        let mut document = schema.clone();
        if let Value::Object(map) = &mut document {
            map.insert("components".into(), self.closed_components.clone());
        } else {
            return Err(format!("{key}: a schema that is not an object: {schema}"));
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&document)
            .map_err(|e| format!("{key}: the description's schema does not compile: {e}"))?;
        let validator = std::sync::Arc::new(validator);
        self.compiled
            .lock()
            .unwrap()
            .insert(key.to_string(), validator.clone());
        Ok(validator)
    }
}

/// `application/json; charset=utf-8` -> `application/json`.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// The components with objects closed: a top-level `allOf` gets
/// `unevaluatedProperties: false`; a plain object with properties gets
/// `additionalProperties: false`, unless it is a part of some `allOf` (where
/// the combining schema closes it).
fn close_components(components: &Value) -> Value {
    let mut components = components.clone();
    let mut parts = BTreeSet::new();
    collect_all_of_parts(&components, false, &mut parts);
    if let Some(schemas) = components.get_mut("schemas").and_then(Value::as_object_mut) {
        for (name, schema) in schemas.iter_mut() {
            let Some(schema) = schema.as_object_mut() else {
                continue;
            };
            if schema.contains_key("allOf") {
                schema
                    .entry("unevaluatedProperties")
                    .or_insert(Value::Bool(false));
            } else if schema.contains_key("properties")
                && !parts.contains(&format!("#/components/schemas/{name}"))
            {
                schema
                    .entry("additionalProperties")
                    .or_insert(Value::Bool(false));
            }
        }
    }
    components
}

/// Every `$ref` reached from inside an `allOf`.
fn collect_all_of_parts(value: &Value, inside: bool, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if let (true, "$ref", Some(r)) = (inside, key.as_str(), v.as_str()) {
                    out.insert(r.to_string());
                }
                collect_all_of_parts(v, inside || key == "allOf", out);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_all_of_parts(v, inside, out);
            }
        }
        _ => {}
    }
}
