//! The rollout state as a Canary's `status.state` records it, read back across controller
//! versions.
//!
//! The record carries the version of its format. A controller reads every version up to its own
//! ([`StateVersion::CURRENT`]); a record written before the format was versioned has no
//! `version` and is version 1. A record from a newer controller is refused with an error naming
//! its version rather than guessed at, so after a downgrade a rollout holds where it is instead
//! of acting on a state misread.
//!
//! Changing the format: a new field whose absence means what older controllers did takes
//! `#[serde(default)]` and needs no new version. Anything an older controller would misread (a
//! field renamed, retyped, given a new meaning, or one it must not ignore) bumps
//! [`StateVersion::CURRENT`], converts the older versions' JSON in [`RolloutState::restore`],
//! and adds a fixture of the older version under `controller/tests/fixtures/`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RolloutState;

/// The format version of a recorded [`RolloutState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StateVersion(pub u32);

impl StateVersion {
    /// The version this controller writes, and the newest it reads.
    pub const CURRENT: StateVersion = StateVersion(1);
    /// Records written before the format had a version.
    pub const UNVERSIONED: StateVersion = StateVersion(1);

    /// The version of a record, checked before anything else in it is read.
    fn of(recorded: &Value) -> Result<StateVersion, StateError> {
        let Some(field) = recorded.get("version") else {
            return Ok(StateVersion::UNVERSIONED);
        };
        match field.as_u64() {
            Some(n) if n > u64::from(Self::CURRENT.0) => Err(StateError::Newer {
                found: n,
                known: Self::CURRENT.0,
            }),
            Some(n) if n >= 1 => Ok(StateVersion(n as u32)),
            _ => Err(StateError::NotAVersion {
                found: field.to_string(),
                known: Self::CURRENT.0,
            }),
        }
    }
}

impl Default for StateVersion {
    fn default() -> Self {
        StateVersion::CURRENT
    }
}

/// Why a recorded state cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error(
        "status.state has format version {found}, written by a newer controller; this one reads \
         versions up to {known}: upgrade the controller"
    )]
    Newer { found: u64, known: u32 },
    #[error("status.state.version is {found}: expected a whole number from 1 to {known}")]
    NotAVersion { found: String, known: u32 },
    #[error("status.state (format version {}) at {path}: {message}", .version.0)]
    Malformed {
        version: StateVersion,
        path: String,
        message: String,
    },
}

impl RolloutState {
    /// Reads a state as recorded by this or an older controller; the result is in the current
    /// format.
    pub fn restore(recorded: &Value) -> Result<RolloutState, StateError> {
        let version = StateVersion::of(recorded)?;
        // Every version so far (1) is read as it is.
        let mut state: RolloutState =
            serde_path_to_error::deserialize(recorded).map_err(|e| StateError::Malformed {
                version,
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        state.version = StateVersion::CURRENT;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Phase;
    use serde_json::json;

    #[test]
    fn a_record_without_a_version_is_read_as_version_one() {
        let state = RolloutState::restore(&json!({"phase": "Progressing", "canaryWeight": 20}))
            .expect("an unversioned record reads");
        assert_eq!(state.version, StateVersion::CURRENT);
        assert_eq!((state.phase, state.canary_weight), (Phase::Progressing, 20));
    }

    #[test]
    fn a_state_is_recorded_with_the_current_version_and_restored_equal() {
        let state = RolloutState {
            phase: Phase::Progressing,
            canary_weight: 30,
            ..RolloutState::default()
        };
        let recorded = serde_json::to_value(&state).unwrap();
        assert_eq!(recorded["version"], json!(StateVersion::CURRENT.0));
        assert_eq!(RolloutState::restore(&recorded), Ok(state));
    }

    #[test]
    fn a_record_from_a_newer_controller_is_refused_naming_its_version() {
        // Checked first: the rest of a newer record may not parse here at all.
        let newer = json!({"version": 7, "phase": "SomethingNew", "canaryWeight": "half"});
        let err = RolloutState::restore(&newer).unwrap_err();
        assert_eq!(err, StateError::Newer { found: 7, known: 1 });
        assert!(err.to_string().contains("format version 7"), "{err}");
    }

    #[test]
    fn a_version_that_is_not_a_positive_whole_number_is_refused() {
        for bad in [json!(0), json!(-1), json!(1.5), json!("1"), json!(null)] {
            let err = RolloutState::restore(&json!({"version": bad, "phase": "Initialized"}));
            assert!(
                matches!(err, Err(StateError::NotAVersion { .. })),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn a_malformed_record_names_the_field() {
        let err = RolloutState::restore(&json!({"phase": "Progressing", "canaryWeight": 300}))
            .unwrap_err();
        let StateError::Malformed { path, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, "canaryWeight");
        assert!(err.to_string().contains("format version 1"), "{err}");
    }
}
