//! The `service` block: the Services Fledge generates and what it copies into the routes and
//! DestinationRules of the mesh.

use super::Problems;
use crate::spec::CanaryService;

/// Checks the service block.
pub(super) fn service(p: &mut Problems, service: &CanaryService) {
    if !(1..=65535).contains(&service.port) {
        p.add(
            "spec.service.port",
            format!("must be a port between 1 and 65535, got {}", service.port),
        );
    }
}
