//! `phoenix report --format junit`: one test suite per phase, one test case per
//! step, so a CI system shows a drill like a test run.

use quick_junit::{NonSuccessKind, Report as JUnit, TestCase, TestCaseStatus, TestSuite};

use super::model::Report;
use crate::journal::reader::StepState;

pub fn render(report: &Report) -> String {
    let status = &report.status;
    let mut junit = JUnit::new(format!("phoenix {} {}", status.plan, status.run_id));
    for phase in crate::plan::Phase::ALL {
        let steps: Vec<_> = status
            .steps
            .iter()
            .filter(|s| s.phase == phase.name())
            .collect();
        if steps.is_empty() {
            continue;
        }
        let mut suite = TestSuite::new(phase.name());
        for step in steps {
            let case_status = match step.state {
                StepState::Succeeded => TestCaseStatus::success(),
                StepState::Failed => {
                    let mut failure = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    failure.set_message(step.error.clone().unwrap_or_else(|| "failed".into()));
                    if let Some(tail) = report.log_tails.get(&step.id) {
                        failure.set_description(tail.clone());
                    }
                    failure
                }
                StepState::InDoubt | StepState::Running => {
                    let mut error = TestCaseStatus::non_success(NonSuccessKind::Error);
                    error.set_message("the run stopped while this step was running");
                    error
                }
                StepState::Pending | StepState::Skipped => {
                    let mut skipped = TestCaseStatus::skipped();
                    skipped.set_message(if step.state == StepState::Pending {
                        "not run".to_string()
                    } else {
                        step.state_with_note()
                    });
                    skipped
                }
            };
            let mut case = TestCase::new(step.id.clone(), case_status);
            case.set_classname(format!("{}.{}", status.plan, phase.name()));
            if let Some(seconds) = step.duration_seconds {
                case.set_time(std::time::Duration::from_secs_f64(seconds.max(0.0)));
            }
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    junit.to_string().unwrap_or_default()
}
