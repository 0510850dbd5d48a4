//! QP state dump/restore and pause/resume scenarios (softroce part 2, issue 4).

use crate::harness::Scenario;

pub const SCENARIOS: &[Scenario] = &[];
