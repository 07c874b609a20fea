//! The CRDs Fledge generates, and the ones its chart installs, are schemas a real API server
//! accepts: they pass the structural-schema rules of kubernetes/apiextensions-apiserver, as the
//! checker in `structural/` states them (its doc names the source files). Each rule first
//! rejects a small schema written to break it, so the checker itself is tested.

mod structural;

use fledge_controller::spec::{AlertProvider, Canary, MetricTemplate};
use kube::CustomResourceExt;
use serde_json::{Value, json};
use structural::{Rule, Violation, check_crd, check_schema};

const CHART_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/fledge/crds/crds.yaml"
);

/// The rules `schema` breaks as a root without the status subresource, each once.
fn rules(schema: Value) -> Vec<Rule> {
    rules_of(check_schema(&schema, false))
}

fn rules_of(violations: Vec<Violation>) -> Vec<Rule> {
    let mut rules: Vec<Rule> = violations.into_iter().map(|v| v.rule).collect();
    rules.sort();
    rules.dedup();
    rules
}

/// `field` as the one property of an otherwise valid root.
fn with_field(field: Value) -> Value {
    json!({"type": "object", "properties": {"spec": field}})
}

fn report(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_crd_version_without_a_schema_is_rejected() {
    let crd = json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true}]}});
    assert_eq!(rules_of(check_crd(&crd)), [Rule::SchemaRequired]);
}

#[test]
fn a_field_without_type_is_rejected_as_the_api_server_does() {
    // The two shapes `serde_json::Value` fields produced: a bare `{}` and `items: {}`.
    assert_eq!(rules(with_field(json!({}))), [Rule::TypeRequired]);
    let untyped_items = json!({"type": "array", "items": {}});
    assert_eq!(rules(with_field(untyped_items)), [Rule::TypeRequired]);
    assert_eq!(rules(json!({"properties": {}})), [Rule::TypeRequired]);
    let found = check_schema(&with_field(json!({"description": "free"})), false);
    assert_eq!(found[0].path, "openAPIV3Schema.properties[spec].type");
    assert_eq!(
        found[0].detail,
        "must not be empty for specified object fields"
    );
}

#[test]
fn int_or_string_and_preserve_unknown_fields_stand_in_for_a_type() {
    let accepted = with_field(json!({
        "type": "object",
        "properties": {
            "port": {"x-kubernetes-int-or-string": true},
            "targetPort": {
                "x-kubernetes-int-or-string": true,
                "anyOf": [{"type": "integer"}, {"type": "string"}]
            },
            "headers": {"x-kubernetes-preserve-unknown-fields": true},
            "match": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            },
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "kind": {"type": "string", "default": ""},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
            "free": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "default": {"anything": {"goes": [1]}}
            }
        }
    }));
    let found = check_schema(&accepted, false);
    assert!(found.is_empty(), "{}", report(&found));
}

#[test]
fn an_unknown_keyword_or_a_keyword_of_the_wrong_json_type_does_not_decode() {
    let examples = with_field(json!({"type": "string", "examples": ["a"]}));
    assert_eq!(rules(examples), [Rule::Decode]);
    // JSON Schema 2020-12 writes exclusiveMinimum as a number; OpenAPI v3 as a flag.
    let bound = with_field(json!({"type": "integer", "minimum": 3, "exclusiveMinimum": 3}));
    assert_eq!(rules(bound), [Rule::Decode]);
}

#[test]
fn ref_and_the_other_unsupported_keywords_are_rejected() {
    let reference = with_field(json!({"type": "object", "$ref": "#/definitions/x"}));
    assert_eq!(rules(reference), [Rule::Unsupported]);
    let patterned = with_field(json!({"type": "object", "patternProperties": {}}));
    assert_eq!(rules(patterned), [Rule::Unsupported]);
}

#[test]
fn type_null_and_unknown_types_are_rejected() {
    assert_eq!(
        rules(with_field(json!({"type": "null"}))),
        [Rule::UnknownType]
    );
    assert_eq!(
        rules(with_field(json!({"type": "int"}))),
        [Rule::UnknownType]
    );
}

#[test]
fn items_must_be_one_schema_and_an_array_must_have_it() {
    let tuple = json!({"type": "array", "items": [{"type": "string"}]});
    assert_eq!(rules(with_field(tuple)), [Rule::ItemsArray]);
    let bare = json!({"type": "array"});
    assert_eq!(rules(with_field(bare)), [Rule::ArrayWithoutItems]);
}

#[test]
fn unique_items_is_rejected() {
    let set = json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true});
    assert_eq!(rules(with_field(set)), [Rule::UniqueItems]);
}

#[test]
fn additional_properties_beside_properties_is_rejected_unless_it_is_true() {
    let both = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": {"type": "string"}
    });
    assert_eq!(
        rules(with_field(both)),
        [Rule::PropertiesAndAdditionalProperties]
    );
    let closed = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": false
    });
    assert_eq!(
        rules(with_field(closed)),
        [Rule::PropertiesAndAdditionalProperties]
    );
    let open = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": true
    });
    assert_eq!(rules(with_field(open)), []);
}

#[test]
fn preserve_unknown_fields_false_is_rejected() {
    let explicit_false = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": false});
    assert_eq!(
        rules(with_field(explicit_false)),
        [Rule::PreserveUnknownFieldsFalse]
    );
}

#[test]
fn int_or_string_together_with_preserve_unknown_fields_is_rejected() {
    let both = json!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-preserve-unknown-fields": true
    });
    assert_eq!(
        rules(with_field(both)),
        [Rule::IntOrStringAndPreserveUnknownFields]
    );
}

#[test]
fn the_root_is_an_object_without_additional_properties_or_nullable() {
    assert_eq!(rules(json!({"type": "string"})), [Rule::RootNotObject]);
    let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    assert_eq!(rules(map), [Rule::RootAdditionalProperties]);
    let nullable = json!({"type": "object", "nullable": true});
    assert_eq!(rules(nullable), [Rule::RootNullable]);
}

#[test]
fn with_the_status_subresource_the_root_holds_only_what_status_extraction_keeps() {
    let bounded = json!({"type": "object", "minProperties": 1});
    assert_eq!(
        rules_of(check_schema(&bounded, true)),
        [Rule::RootKeywordWithStatus]
    );
    assert_eq!(rules_of(check_schema(&bounded, false)), []);
    let plain = json!({"type": "object", "description": "d", "title": "t", "required": []});
    assert_eq!(rules_of(check_schema(&plain, true)), []);
}

#[test]
fn the_roots_metadata_may_restrict_only_name_and_generate_name() {
    let labels = json!({"type": "object", "properties": {"metadata": {
        "type": "object",
        "properties": {"labels": {"type": "object", "additionalProperties": {"type": "string"}}}
    }}});
    assert_eq!(rules(labels), [Rule::RootMetadata]);
    let described = json!({"type": "object", "properties": {"metadata": {
        "type": "object", "description": "ours"
    }}});
    assert_eq!(rules(described), [Rule::RootMetadata]);
    let named = json!({"type": "object", "properties": {"metadata": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 63}}
    }}});
    assert_eq!(rules(named), []);
}

#[test]
fn the_roots_kind_and_api_version_are_strings_without_defaults() {
    let kind = json!({"type": "object", "properties": {"kind": {"type": "integer"}}});
    assert_eq!(rules(kind), [Rule::TypeMetaNotString]);
    let defaulted = json!({"type": "object", "properties": {
        "apiVersion": {"type": "string", "default": "fledge.dev/v1alpha1"}
    }});
    assert_eq!(rules(defaulted), [Rule::DefaultInRootMeta]);
}

#[test]
fn value_validations_hold_no_type_description_default_or_nullable() {
    for forbidden in [
        json!({"type": "string"}),
        json!({"description": "d"}),
        json!({"title": "t"}),
        json!({"default": "x"}),
        json!({"nullable": true}),
        json!({"additionalProperties": {"type": "string"}}),
        json!({"x-kubernetes-preserve-unknown-fields": true}),
        json!({"x-kubernetes-int-or-string": true}),
    ] {
        let field = with_field(json!({"type": "string", "anyOf": [forbidden.clone()]}));
        assert_eq!(rules(field), [Rule::NotValueValidation], "{forbidden}");
        let under_not = with_field(json!({"type": "string", "not": forbidden.clone()}));
        assert_eq!(rules(under_not), [Rule::NotValueValidation], "{forbidden}");
    }
    // Allowed: value validations only, and the int-or-string patterns.
    let bounds =
        with_field(json!({"type": "string", "anyOf": [{"maxLength": 3}, {"enum": ["long"]}]}));
    assert_eq!(rules(bounds), []);
    let int_or_string_all_of = with_field(json!({
        "x-kubernetes-int-or-string": true,
        "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"maxLength": 3}]
    }));
    assert_eq!(rules(int_or_string_all_of), []);
    let reversed = with_field(json!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "string"}, {"type": "integer"}]
    }));
    assert_eq!(rules(reversed), [Rule::NotValueValidation]);
}

#[test]
fn metadata_is_never_named_in_a_value_validation() {
    let field = with_field(json!({
        "type": "object",
        "properties": {"metadata": {"type": "object"}},
        "allOf": [{"properties": {"metadata": {"maxProperties": 1}}}]
    }));
    assert_eq!(rules(field), [Rule::MetadataInNestedContext]);
}

#[test]
fn a_value_validation_names_only_what_the_structural_schema_specifies() {
    let missing = json!({
        "type": "object",
        "properties": {"spec": {"type": "object"}},
        "allOf": [{"properties": {"status": {"maxProperties": 1}}}]
    });
    let found = check_schema(&missing, false);
    assert_eq!(rules_of(found.clone()), [Rule::Incomplete]);
    assert_eq!(found[0].path, "openAPIV3Schema.properties[status]");
    let present = json!({
        "type": "object",
        "properties": {"spec": {"type": "object"}},
        "allOf": [{"properties": {"spec": {"maxProperties": 1}}}]
    });
    assert_eq!(rules(present), []);
}

#[test]
fn a_default_must_validate_against_its_schema() {
    let wrong_type = with_field(json!({"type": "integer", "default": "one"}));
    assert_eq!(rules(wrong_type), [Rule::DefaultInvalid]);
    let not_in_enum = with_field(json!({"type": "string", "enum": ["a"], "default": "b"}));
    assert_eq!(rules(not_in_enum), [Rule::DefaultInvalid]);
    let null = with_field(json!({"type": "string", "default": null}));
    assert_eq!(rules(null), [Rule::DefaultInvalid]);
}

#[test]
fn a_default_must_survive_pruning_unchanged() {
    let unknown_field = with_field(json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "default": {"a": "x", "b": "y"}
    }));
    assert_eq!(rules(unknown_field), [Rule::DefaultNotPruned]);
}

#[test]
fn keywords_the_checker_does_not_implement_fail_rather_than_pass_unchecked() {
    let pattern = with_field(json!({"type": "string", "pattern": "^a"}));
    assert_eq!(rules(pattern), [Rule::NotCovered]);
    let list_type =
        json!({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"});
    assert_eq!(rules(with_field(list_type)), [Rule::NotCovered]);
}

fn generated() -> Vec<Value> {
    [Canary::crd(), MetricTemplate::crd(), AlertProvider::crd()]
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("a CRD serialises"))
        .collect()
}

#[test]
fn the_generated_crds_are_structural_schemas_a_real_api_server_accepts() {
    for crd in generated() {
        let found = check_crd(&crd);
        assert!(
            found.is_empty(),
            "{}:\n{}",
            crd["metadata"]["name"],
            report(&found)
        );
    }
}

#[test]
fn the_chart_installs_exactly_the_generated_crds() {
    let text = std::fs::read_to_string(CHART_CRDS).expect("the chart's crds.yaml");
    let installed: Vec<Value> = text
        .split("\n---\n")
        .map(|doc| doc.trim_start_matches("---\n"))
        .map(|doc| serde_norway::from_str(doc).expect("YAML"))
        .collect();
    assert!(
        installed == generated(),
        "charts/fledge/crds/crds.yaml is out of date; regenerate it with\n  \
         cargo run -p fledge-controller --bin fledge-controller -- crd > charts/fledge/crds/crds.yaml"
    );
}
