//! The rules a Kubernetes API server applies to the `openAPIV3Schema` of an
//! `apiextensions.k8s.io/v1` CustomResourceDefinition before it accepts it, as a checker over the
//! schema's JSON.
//!
//! Each rule is taken from the API server's own validation in kubernetes/apiextensions-apiserver
//! (the same code is vendored in kubernetes/kubernetes under
//! `staging/src/k8s.io/apiextensions-apiserver/`):
//! - `pkg/apis/apiextensions/v1/types_jsonschema.go`: the keywords a schema may hold, and their
//!   JSON types (anything else is an unknown field);
//! - `pkg/apis/apiextensions/validation/validation.go`: `validateCustomResourceDefinitionValidation`
//!   (the root under the status subresource), `ValidateCustomResourceDefinitionOpenAPISchema` and
//!   `specStandardValidatorV3.validate` (unsupported keywords, `additionalProperties` beside
//!   `properties`, `items` a single schema, no defaults in the root's metadata);
//! - `pkg/apiserver/schema/validation.go`: `ValidateStructural` (a type at every level, the
//!   int-or-string and preserve-unknown-fields exceptions, value validations under
//!   `anyOf`/`allOf`/`oneOf`/`not`, root `metadata`);
//! - `pkg/apiserver/schema/complete.go`: `validateStructuralCompleteness`;
//! - `pkg/apiserver/schema/defaulting/validation.go` with `pruning/algorithm.go`: defaults
//!   validate against their schema and survive pruning unchanged.
//!
//! Not covered: `x-kubernetes-embedded-resource`, `x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`, `x-kubernetes-validations` (CEL) and
//! `pattern` (RE2 syntax). A schema that uses one gets [`Rule::NotCovered`], so it fails here
//! until the checker learns that keyword's rules, rather than passing unchecked.

#![allow(dead_code)]

use serde_json::{Map, Value};

/// Which of the API server's rules a schema breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Every served version of a v1 CRD needs a schema.
    SchemaRequired,
    /// A keyword the API server does not know, or a value of the wrong JSON type.
    Decode,
    /// `id`, `$ref`, `definitions`, `dependencies`, `additionalItems`, `patternProperties`.
    Unsupported,
    /// `type` other than string, number, integer, boolean, array, object (`null` included).
    UnknownType,
    /// `items` must be a schema, not an array of schemas.
    ItemsArray,
    /// `uniqueItems: true`.
    UniqueItems,
    /// `additionalProperties` (a schema or `false`) beside `properties`.
    PropertiesAndAdditionalProperties,
    /// `x-kubernetes-preserve-unknown-fields` must be true or undefined.
    PreserveUnknownFieldsFalse,
    /// `type: array` without `items`.
    ArrayWithoutItems,
    /// A node without `type` (and without int-or-string or preserve-unknown-fields).
    TypeRequired,
    /// `additionalProperties` at the root.
    RootAdditionalProperties,
    /// The root is not `type: object`.
    RootNotObject,
    /// `nullable: true` at the root.
    RootNullable,
    /// With the status subresource, a keyword the root may not hold.
    RootKeywordWithStatus,
    /// `kind` or `apiVersion` at the root typed other than string.
    TypeMetaNotString,
    /// The root's `metadata` specifies more than `name` and `generateName`.
    RootMetadata,
    /// `default` inside the root's `metadata`, `kind` or `apiVersion`.
    DefaultInRootMeta,
    /// `x-kubernetes-int-or-string` together with `x-kubernetes-preserve-unknown-fields`.
    IntOrStringAndPreserveUnknownFields,
    /// Under `anyOf`/`allOf`/`oneOf`/`not`, a keyword only the structural part may hold.
    NotValueValidation,
    /// Under `anyOf`/`allOf`/`oneOf`/`not`, a `metadata` property.
    MetadataInNestedContext,
    /// A value validation names a property or items the structural part does not specify.
    Incomplete,
    /// A default that does not validate against its schema.
    DefaultInvalid,
    /// A default with fields that pruning would drop.
    DefaultNotPruned,
    /// A keyword whose rules this checker does not implement.
    NotCovered,
}

/// One broken rule, where, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub rule: Rule,
    pub path: String,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}: {}", self.path, self.rule, self.detail)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// The rules of every version's schema of `crd` (a whole CustomResourceDefinition).
pub fn check_crd(crd: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        let status = !version["subresources"]["status"].is_null();
        match version["schema"].get("openAPIV3Schema") {
            Some(schema) => out.extend(check_schema_at(schema, status, &path)),
            None => push(
                &mut out,
                Rule::SchemaRequired,
                &path,
                "schemas are required",
            ),
        }
    }
    out
}

/// The fields of `object`'s `spec` that the API server prunes when it stores the object under
/// the schema of `crd`'s first version (pruning/algorithm.go), as paths from `spec`.
pub fn pruned_from_spec(crd: &Value, object: &Value) -> Vec<String> {
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = Vec::new();
    let spec = schema.as_object().and_then(|s| property(s, "spec"));
    prunable(&object["spec"], spec, "spec", &mut out);
    out
}

/// The rules of one `openAPIV3Schema`; `status_subresource` says whether the version enables it.
pub fn check_schema(schema: &Value, status_subresource: bool) -> Vec<Violation> {
    check_schema_at(schema, status_subresource, "openAPIV3Schema")
}

fn check_schema_at(schema: &Value, status_subresource: bool, path: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(root) = schema.as_object() else {
        push(&mut out, Rule::Decode, path, "must be a schema object");
        return out;
    };
    if status_subresource {
        root_with_status(root, path, &mut out);
    }
    if flag(root, "nullable") {
        push(
            &mut out,
            Rule::RootNullable,
            path,
            "nullable cannot be true at the root",
        );
    }
    structural(root, path, Level::Root, &mut out);
    // complete.go starts from the root's value validations only.
    complete(root, root, path, path, &mut out);
    out
}

/// validation.go, `allowedFieldsAtRootSchema`: what `status` extracted as `properties[status]`
/// would not lose.
fn root_with_status(root: &Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    const ALLOWED: [&str; 22] = [
        "description",
        "type",
        "format",
        "title",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "required",
        "items",
        "properties",
        "externalDocs",
        "example",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-validations",
    ];
    for (key, value) in root {
        if !ALLOWED.contains(&key.as_str()) && !is_zero(value) {
            let detail = format!("`{key}` is not allowed at the root with the status subresource");
            push(out, Rule::RootKeywordWithStatus, path, &detail);
        }
    }
    if root.get("type").is_some_and(|t| t != "object") {
        let detail =
            "only \"object\" is allowed as the type at the root with the status subresource";
        push(
            out,
            Rule::RootKeywordWithStatus,
            &format!("{path}.type"),
            detail,
        );
    }
}

/// The structural part: the node and everything reachable without passing a junctor.
fn structural(node: &Map<String, Value>, path: &str, level: Level, out: &mut Vec<Violation>) {
    keywords(node, path, out);
    let ty = node.get("type").and_then(Value::as_str).unwrap_or("");
    let int_or_string = flag(node, "x-kubernetes-int-or-string");
    let preserve = flag(node, "x-kubernetes-preserve-unknown-fields");

    if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        let detail = "must be true or undefined";
        let at = format!("{path}.x-kubernetes-preserve-unknown-fields");
        push(out, Rule::PreserveUnknownFieldsFalse, &at, detail);
    }
    if flag(node, "uniqueItems") {
        let detail =
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic";
        push(
            out,
            Rule::UniqueItems,
            &format!("{path}.uniqueItems"),
            detail,
        );
    }
    match node.get("items") {
        Some(Value::Array(_)) => {
            let detail = "items must be a schema object and not an array";
            push(out, Rule::ItemsArray, &format!("{path}.items"), detail);
        }
        Some(Value::Object(items)) => structural(items, &format!("{path}.items"), Level::Item, out),
        _ if ty == "array" => {
            push(
                out,
                Rule::ArrayWithoutItems,
                &format!("{path}.items"),
                "must be specified",
            );
        }
        _ => {}
    }
    let properties = node.get("properties").and_then(Value::as_object);
    for (name, field) in properties.into_iter().flatten() {
        let at = format!("{path}.properties[{name}]");
        match field.as_object() {
            Some(field) => structural(field, &at, Level::Field, out),
            None => push(out, Rule::Decode, &at, "must be a schema object"),
        }
    }
    if let Some(additional) = node.get("additionalProperties") {
        let at = format!("{path}.additionalProperties");
        if level == Level::Root {
            push(
                out,
                Rule::RootAdditionalProperties,
                &at,
                "must not be used at the root",
            );
        }
        if properties.is_some_and(|p| !p.is_empty()) && additional != &Value::Bool(true) {
            let detail = "additionalProperties and properties are mutual exclusive";
            push(out, Rule::PropertiesAndAdditionalProperties, &at, detail);
        }
        if let Value::Object(schema) = additional {
            structural(schema, &at, Level::Field, out);
        }
    }

    if ty.is_empty() && !int_or_string && !preserve {
        let detail = match level {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        push(out, Rule::TypeRequired, &format!("{path}.type"), detail);
    }
    if level == Level::Root && !ty.is_empty() && ty != "object" {
        push(
            out,
            Rule::RootNotObject,
            &format!("{path}.type"),
            "must be object at the root",
        );
    }
    if int_or_string && preserve {
        let detail = "must be false if x-kubernetes-int-or-string is true";
        let at = format!("{path}.x-kubernetes-preserve-unknown-fields");
        push(out, Rule::IntOrStringAndPreserveUnknownFields, &at, detail);
    }
    if level == Level::Root {
        root_meta(node, path, out);
    }

    // The two int-or-string patterns are the only place a junctor may hold `type`.
    let skip_any_of = is_int_or_string_any_of(node.get("anyOf"));
    let skip_first_all_of_any_of = node
        .get("allOf")
        .and_then(|a| a.get(0))
        .is_some_and(|first| is_int_or_string_any_of(first.get("anyOf")));
    junctors(node, path, skip_any_of, skip_first_all_of_any_of, out);

    if let Some(default) = node.get("default") {
        defaults(default, node, &format!("{path}.default"), out);
    }
}

/// The root's `kind`, `apiVersion` and `metadata` (validation.go and schema/validation.go).
fn root_meta(root: &Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    let Some(properties) = root.get("properties").and_then(Value::as_object) else {
        return;
    };
    for name in ["kind", "apiVersion", "metadata"] {
        let Some(field) = properties.get(name).and_then(Value::as_object) else {
            continue;
        };
        let at = format!("{path}.properties[{name}]");
        if contains_default(field) {
            push(
                out,
                Rule::DefaultInRootMeta,
                &at,
                "default must not be set in top-level meta",
            );
        }
        let ty = field.get("type").and_then(Value::as_str).unwrap_or("");
        if name != "metadata" && ty != "string" {
            push(
                out,
                Rule::TypeMetaNotString,
                &format!("{at}.type"),
                "must be string",
            );
        }
    }
    let Some(metadata) = properties.get("metadata").and_then(Value::as_object) else {
        return;
    };
    let at = format!("{path}.properties[metadata]");
    if metadata.get("type").and_then(Value::as_str) != Some("object") {
        push(
            out,
            Rule::RootMetadata,
            &format!("{at}.type"),
            "must be object",
        );
    }
    // Only `type`, `default` and a `properties` of name and/or generateName may be said.
    let restricts_only_names = metadata.iter().all(|(key, value)| match key.as_str() {
        "type" | "default" => true,
        "properties" => value
            .as_object()
            .is_some_and(|p| p.keys().all(|k| k == "name" || k == "generateName")),
        _ => is_zero(value),
    });
    if !restricts_only_names {
        let detail = "must not specify anything other than name and generateName";
        push(out, Rule::RootMetadata, &at, detail);
    }
}

fn contains_default(node: &Map<String, Value>) -> bool {
    node.contains_key("default") || subschemas(node).into_iter().any(contains_default)
}

/// The schemas directly under `node`, wherever validation.go recurses.
fn subschemas(node: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    let mut out = Vec::new();
    for key in ["items", "additionalProperties", "not"] {
        out.extend(node.get(key).and_then(Value::as_object));
    }
    for key in ["properties", "definitions", "dependencies"] {
        let map = node.get(key).and_then(Value::as_object);
        out.extend(map.into_iter().flatten().filter_map(|(_, v)| v.as_object()));
    }
    for key in ["items", "allOf", "anyOf", "oneOf"] {
        let list = node.get(key).and_then(Value::as_array);
        out.extend(list.into_iter().flatten().filter_map(Value::as_object));
    }
    out
}

fn property<'a>(node: &'a Map<String, Value>, name: &str) -> Option<&'a Map<String, Value>> {
    node.get("properties")?.get(name)?.as_object()
}

fn is_int_or_string_any_of(any_of: Option<&Value>) -> bool {
    any_of == Some(&serde_json::json!([{"type": "integer"}, {"type": "string"}]))
}

/// The junctors of a node: each member is a value validation.
fn junctors(
    node: &Map<String, Value>,
    path: &str,
    skip_any_of: bool,
    skip_first_all_of_any_of: bool,
    out: &mut Vec<Violation>,
) {
    for junctor in ["anyOf", "allOf", "oneOf"] {
        if junctor == "anyOf" && skip_any_of {
            continue;
        }
        let members = node.get(junctor).and_then(Value::as_array);
        for (i, member) in members.into_iter().flatten().enumerate() {
            let skip = junctor == "allOf" && i == 0 && skip_first_all_of_any_of;
            nested(member, &format!("{path}.{junctor}[{i}]"), skip, out);
        }
    }
    if let Some(not) = node.get("not") {
        nested(not, &format!("{path}.not"), false, out);
    }
}

/// schema/validation.go, `validateNestedValueValidation`.
fn nested(node: &Value, path: &str, skip_any_of: bool, out: &mut Vec<Violation>) {
    let Some(node) = node.as_object() else {
        push(out, Rule::Decode, path, "must be a schema object");
        return;
    };
    keywords(node, path, out);
    junctors(node, path, skip_any_of, false, out);
    if let Some(items) = node.get("items") {
        nested(items, &format!("{path}.items"), false, out);
    }
    let properties = node.get("properties").and_then(Value::as_object);
    for (name, field) in properties.into_iter().flatten() {
        nested(field, &format!("{path}.properties[{name}]"), false, out);
    }
    if properties.is_some_and(|p| p.contains_key("metadata")) {
        let at = format!("{path}.properties[metadata]");
        push(
            out,
            Rule::MetadataInNestedContext,
            &at,
            "must not be specified in a nested context",
        );
    }
    const STRUCTURAL_ONLY: [&str; 13] = [
        "type",
        "additionalProperties",
        "default",
        "title",
        "description",
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
    ];
    for key in STRUCTURAL_ONLY {
        if node.get(key).is_some_and(|v| !is_zero(v)) {
            let detail = "must be undefined (or empty, false) to be structural";
            push(
                out,
                Rule::NotValueValidation,
                &format!("{path}.{key}"),
                detail,
            );
        }
    }
}

/// complete.go: the properties and items a value validation names exist in the structural node.
fn complete(
    validation: &Map<String, Value>,
    node: &Map<String, Value>,
    node_path: &str,
    validation_path: &str,
    out: &mut Vec<Violation>,
) {
    for junctor in ["not", "allOf", "anyOf", "oneOf"] {
        let members: Vec<&Value> = match validation.get(junctor) {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v) if junctor == "not" => vec![v],
            _ => continue,
        };
        for (i, member) in members.into_iter().enumerate() {
            let Some(member) = member.as_object() else {
                continue;
            };
            let at = if junctor == "not" {
                format!("{validation_path}.not")
            } else {
                format!("{validation_path}.{junctor}[{i}]")
            };
            complete_nested(member, Some(node), node_path, &at, out);
        }
    }
}

fn complete_nested(
    validation: &Map<String, Value>,
    node: Option<&Map<String, Value>>,
    node_path: &str,
    validation_path: &str,
    out: &mut Vec<Violation>,
) {
    let Some(node) = node else {
        let detail = format!("because it is defined in {validation_path}");
        push(out, Rule::Incomplete, node_path, &detail);
        return;
    };
    complete(validation, node, node_path, validation_path, out);
    if let Some(items) = validation.get("items").and_then(Value::as_object) {
        let node_items = node.get("items").and_then(Value::as_object);
        let (np, vp) = (
            format!("{node_path}.items"),
            format!("{validation_path}.items"),
        );
        complete_nested(items, node_items, &np, &vp, out);
    }
    let properties = validation.get("properties").and_then(Value::as_object);
    for (name, field) in properties.into_iter().flatten() {
        let Some(field) = field.as_object() else {
            continue;
        };
        let node_field = property(node, name);
        let np = format!("{node_path}.properties[{name}]");
        let vp = format!("{validation_path}.properties[{name}]");
        complete_nested(field, node_field, &np, &vp, out);
    }
}

/// types_jsonschema.go: the keywords a schema may hold, each with its JSON type.
fn keywords(node: &Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    for (key, value) in node {
        let at = format!("{path}.{key}");
        let fits = match key.as_str() {
            "id" | "$ref" | "definitions" | "dependencies" | "additionalItems"
            | "patternProperties" => {
                push(
                    out,
                    Rule::Unsupported,
                    &at,
                    &format!("{key} is not supported"),
                );
                true
            }
            "x-kubernetes-embedded-resource"
            | "x-kubernetes-list-type"
            | "x-kubernetes-list-map-keys"
            | "x-kubernetes-map-type"
            | "x-kubernetes-validations"
            | "pattern" => {
                let detail = format!("this checker does not implement the rules of {key}");
                push(out, Rule::NotCovered, &at, &detail);
                true
            }
            "$schema" | "description" | "format" | "title" => value.is_string(),
            "type" => match value.as_str() {
                Some(t) => {
                    let known = ["string", "number", "integer", "boolean", "array", "object"];
                    if !known.contains(&t) {
                        let detail = format!("unsupported type {t:?}; use nullable for null");
                        push(out, Rule::UnknownType, &at, &detail);
                    }
                    true
                }
                None => false,
            },
            "nullable"
            | "uniqueItems"
            | "exclusiveMaximum"
            | "exclusiveMinimum"
            | "x-kubernetes-preserve-unknown-fields"
            | "x-kubernetes-int-or-string" => value.is_boolean(),
            "maximum" | "minimum" | "multipleOf" => value.is_number(),
            "maxLength" | "minLength" | "maxItems" | "minItems" | "maxProperties"
            | "minProperties" => value.is_i64() || value.is_u64(),
            "required" => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            "enum" => value.is_array(),
            "default" | "example" => true,
            "externalDocs" => value.is_object(),
            "properties" => value.is_object(),
            "items" => value.is_object() || value.is_array(),
            "additionalProperties" => value.is_object() || value.is_boolean(),
            "not" => value.is_object(),
            "allOf" | "anyOf" | "oneOf" => value.is_array(),
            _ => {
                push(out, Rule::Decode, &at, "unknown field of a JSONSchemaProps");
                true
            }
        };
        if !fits {
            push(out, Rule::Decode, &at, &format!("wrong JSON type: {value}"));
        }
    }
}

/// defaulting/validation.go: a default validates against its schema and pruning keeps all of it.
fn defaults(default: &Value, node: &Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    let mut problems = Vec::new();
    validate_value(default, node, path, &mut problems);
    for (at, detail) in problems {
        push(out, Rule::DefaultInvalid, &at, &detail);
    }
    let mut pruned = Vec::new();
    prunable(default, Some(node), path, &mut pruned);
    for at in pruned {
        push(
            out,
            Rule::DefaultNotPruned,
            &at,
            "must not have unknown fields",
        );
    }
}

/// Whether `value` fits `schema` in type, nullability, enum, required fields and, recursively,
/// its properties and items.
fn validate_value(
    value: &Value,
    schema: &Map<String, Value>,
    path: &str,
    out: &mut Vec<(String, String)>,
) {
    if value.is_null() {
        if !flag(schema, "nullable") {
            out.push((
                path.into(),
                "null is not allowed (nullable is not true)".into(),
            ));
        }
        return;
    }
    let fits = match schema.get("type").and_then(Value::as_str) {
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        _ if flag(schema, "x-kubernetes-int-or-string") => {
            value.is_i64() || value.is_u64() || value.is_string()
        }
        _ => true,
    };
    if !fits {
        let ty = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("int-or-string");
        let detail = format!("{value} does not match type {ty}");
        out.push((path.into(), detail));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push((path.into(), format!("{value} is not one of the enum")));
    }
    match value {
        Value::Object(fields) => {
            let required = schema.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    out.push((format!("{path}.{name}"), "required".into()));
                }
            }
            for (name, v) in fields {
                let field = property(schema, name).or_else(|| {
                    schema
                        .get("additionalProperties")
                        .and_then(Value::as_object)
                });
                if let Some(field) = field {
                    validate_value(v, field, &format!("{path}.{name}"), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items").and_then(Value::as_object) {
                for (i, v) in items.iter().enumerate() {
                    validate_value(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// pruning/algorithm.go, `prune`: the fields of `value` that pruning against `schema` drops.
fn prunable(value: &Value, schema: Option<&Map<String, Value>>, path: &str, out: &mut Vec<String>) {
    if let Some(s) = schema
        && flag(s, "x-kubernetes-preserve-unknown-fields")
    {
        return prunable_preserved(value, s, path, out);
    }
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                let at = format!("{path}.{name}");
                let field = schema.and_then(|s| property(s, name));
                let additional = schema.and_then(|s| s.get("additionalProperties"));
                if field.is_some() {
                    prunable(v, field, &at, out);
                } else if let Some(additional) = additional {
                    prunable(v, additional.as_object(), &at, out);
                } else {
                    out.push(at);
                }
            }
        }
        Value::Array(items) => {
            let item = schema
                .and_then(|s| s.get("items"))
                .and_then(Value::as_object);
            for (i, v) in items.iter().enumerate() {
                prunable(v, item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// pruning/algorithm.go, `skipPrune`: under preserve-unknown-fields, unknown fields stay, and
/// only what the schema specifies is pruned.
fn prunable_preserved(
    value: &Value,
    schema: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                let at = format!("{path}.{name}");
                if let Some(field) = property(schema, name) {
                    prunable(v, Some(field), &at, out);
                } else if let Some(additional) = schema.get("additionalProperties") {
                    prunable(v, additional.as_object(), &at, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items").and_then(Value::as_object) {
                for (i, v) in items.iter().enumerate() {
                    prunable_preserved(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn flag(node: &Map<String, Value>, key: &str) -> bool {
    node.get(key) == Some(&Value::Bool(true))
}

/// Go's zero value of a JSONSchemaProps field: unset, false, empty.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

fn push(out: &mut Vec<Violation>, rule: Rule, path: &str, detail: &str) {
    out.push(Violation {
        rule,
        path: path.to_string(),
        detail: detail.to_string(),
    });
}
