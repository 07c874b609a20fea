//! What the mesh tests share: a pod's behaviour, a mesh built with manifests applied, and the
//! source reporter's requests counted by response flag.

use fledge_simulator::engine::MILLIS;
use fledge_simulator::manifest;
use fledge_simulator::mesh::{Behaviour, Mesh, MeshConfig, ServiceTime};
use fledge_simulator::telemetry::{Reporter, Selector};

/// A pod with `workers` workers and exponential service times of mean `mean_ms`.
pub fn behaviour(mean_ms: u64, workers: u32) -> Behaviour {
    Behaviour {
        workers,
        service_time: ServiceTime::Exponential {
            mean: mean_ms * MILLIS,
        },
        ..Default::default()
    }
}

/// The mesh of `cfg` with `manifests` (YAML, possibly empty) applied.
pub fn mesh_with(cfg: MeshConfig, manifests: &str) -> Mesh {
    let mut mesh = Mesh::new(cfg).expect("mesh builds");
    if !manifests.is_empty() {
        mesh.apply_manifests(&manifest::parse(manifests).expect("manifests parse"))
            .expect("manifests apply");
    }
    mesh
}

/// Requests the clients' sidecars reported so far whose response flags satisfy `pred`.
pub fn count_flags(mesh: &Mesh, pred: impl Fn(u16) -> bool) -> u64 {
    let sel = Selector {
        reporter: Reporter::Source,
        source: None,
        dest: None,
    };
    mesh.telemetry()
        .by_code(&sel, 0, mesh.now(), mesh.now())
        .iter()
        .filter(|(_, f, _)| pred(*f))
        .map(|x| x.2)
        .sum()
}
