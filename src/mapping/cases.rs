//! Test cases a mapping carries.
use super::*;
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}
#[derive(Debug, Clone)]
pub struct TestReport {
    pub cases: Vec<CaseOutcome>,
}
pub fn run(_m: &Mapping, _phones: &PhoneParser) -> TestReport {
    todo!()
}
