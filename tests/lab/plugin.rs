//! CRIU plugin scenarios (issue 5).

use crate::harness::Scenario;

pub const SCENARIOS: &[Scenario] = &[];
