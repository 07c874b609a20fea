//! Scenarios a test writes: a small builder of a mesh without a Canary (services, clients,
//! manifests, expectations) that yields the YAML a user would write, the Istio manifests such
//! tests keep writing, and loading and running the text as `fledge-sim` does.

use std::path::Path;

use fledge_simulator::result::RunResult;
use fledge_simulator::scenario::Scenario;
use fledge_simulator::{expect, harness};

/// `text` loaded as the scenario file `test.yaml`; the error as `fledge-sim` prints it.
pub fn load(text: &str) -> Result<Scenario, String> {
    Scenario::parse(text, Path::new("test.yaml")).map_err(|e| e.to_string())
}

/// The error `text` loads with; a panic saying `why` if it loads.
pub fn refused(text: &str, why: &str) -> String {
    match load(text) {
        Ok(_) => panic!("{why}, yet the scenario loads"),
        Err(e) => e,
    }
}

/// `text`'s first variant run at its seed, its expectations checked.
pub fn checked(text: &str) -> RunResult {
    let s = load(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let run = harness::run(&s, &s.variants[0], s.seed).expect("the run");
    expect::checked(run, &s.variants[0].expect)
}

/// The repository's `scenarios/<name>.yaml` run at `seed` (its expectations not checked).
pub fn run_file(name: &str, seed: u64) -> RunResult {
    let file = format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let s = Scenario::load(Path::new(&file)).unwrap_or_else(|e| panic!("{e}"));
    harness::run(&s, &s.variants[0], seed).expect("the run")
}

/// The requests `service`'s `version` answered in `r`.
pub fn version_requests(r: &RunResult, service: &str, version: &str) -> u64 {
    r.services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.versions.iter().find(|v| v.version == version))
        .unwrap_or_else(|| panic!("no {service} {version} in {:?}", r.services))
        .requests
}

/// `text` with every line indented by `by` spaces.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| match l {
            "" => "\n".to_string(),
            l => format!("{pad}{l}\n"),
        })
        .collect()
}

/// A DestinationRule for `host` with one subset per version, labelled `version: <name>`.
pub fn subsets(host: &str, versions: &[&str]) -> String {
    let list: String = versions
        .iter()
        .map(|v| format!("    - {{name: {v}, labels: {{version: {v}}}}}\n"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n  subsets:\n{list}"
    )
}

/// A DestinationRule for `host` whose `spec` goes on with `rest` (YAML written from the first
/// column, as `trafficPolicy: ...`).
pub fn destination_rule(host: &str, rest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n{}",
        indent(rest, 2)
    )
}

/// A VirtualService for `host` whose `http` routes are `http`, a YAML list written from the
/// first column (`- route: ...`).
pub fn virtual_service(host: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  http:\n{}",
        indent(http, 4)
    )
}

/// A scenario of services without a Canary, as a user writes it; `text()` is its YAML.
pub struct MeshScenario {
    name: String,
    seed: u64,
    duration: String,
    services: String,
    traffic: String,
    manifests: Vec<String>,
    expect: String,
}

impl MeshScenario {
    /// Seed 1, one minute, nothing in it yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            seed: 1,
            duration: "1m".into(),
            services: String::new(),
            traffic: String::new(),
            manifests: Vec::new(),
            expect: String::new(),
        }
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn duration(mut self, duration: &str) -> Self {
        self.duration = duration.into();
        self
    }

    /// A service whose versions are (name, its mapping in flow style), as
    /// `("v1", "{pods: 1, latency: {constant: 2ms}}")`.
    pub fn service(mut self, name: &str, versions: &[(&str, &str)]) -> Self {
        self.services += &format!("  - name: {name}\n    versions:\n");
        for (v, body) in versions {
            self.services += &format!("      {v}: {body}\n");
        }
        self
    }

    /// A client of `service` at `rate` requests/s.
    pub fn client(self, name: &str, service: &str, rate: u32) -> Self {
        self.client_with(name, service, rate, "")
    }

    /// A client of `service` at `rate` requests/s with more keys of its own (`extra`, YAML
    /// written from the first column), as `headers: [{weight: 1, set: {end-user: jason}}]`.
    pub fn client_with(mut self, name: &str, service: &str, rate: u32, extra: &str) -> Self {
        self.traffic += &format!("  - client: {name}\n    service: {service}\n    rate: {rate}\n");
        self.traffic += &indent(extra, 4);
        self
    }

    /// One manifest document (YAML written from the first column).
    pub fn manifest(mut self, yaml: &str) -> Self {
        self.manifests.push(yaml.trim_matches('\n').to_string());
        self
    }

    /// The `expect` mapping (YAML written from the first column).
    pub fn expect(mut self, yaml: &str) -> Self {
        self.expect = yaml.into();
        self
    }

    /// The scenario's YAML.
    pub fn text(&self) -> String {
        let mut t = format!(
            "name: {}\nseed: {}\nduration: {}\nservices:\n{}traffic:\n{}",
            self.name, self.seed, self.duration, self.services, self.traffic
        );
        if !self.manifests.is_empty() {
            t += "manifests: |\n";
            t += &indent(&self.manifests.join("\n---\n"), 2);
        }
        if !self.expect.is_empty() {
            t += "expect:\n";
            t += &indent(&self.expect, 2);
        }
        t
    }
}
