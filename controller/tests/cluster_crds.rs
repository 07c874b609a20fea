//! The CRDs committed in the Helm chart are the ones the Rust types generate.
#![cfg(feature = "cluster")]

use std::process::Command;

const COMMITTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/fledge/crds/crds.yaml"
);

#[test]
fn the_charts_crds_equal_what_fledge_controller_crd_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge-controller"))
        .arg("crd")
        .output()
        .expect("fledge-controller runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        generated == committed,
        "charts/fledge/crds/crds.yaml is out of date; regenerate it with\n  \
         cargo run -p fledge-controller -- crd > charts/fledge/crds/crds.yaml"
    );
}

#[test]
fn the_crds_describe_canaries_with_a_status_subresource_metric_templates_and_alert_providers() {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge-controller"))
        .arg("crd")
        .output()
        .expect("fledge-controller runs");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let docs: Vec<serde_norway::Value> = text
        .split("\n---\n")
        .map(|d| serde_norway::from_str(d.trim_start_matches("---\n")).expect("YAML"))
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "canaries.fledge.dev",
            "metrictemplates.fledge.dev",
            "alertproviders.fledge.dev"
        ]
    );
    let version = &docs[0]["spec"]["versions"][0];
    assert_eq!(version["name"].as_str(), Some("v1alpha1"));
    assert!(version["subresources"]["status"].is_mapping());
}
