//! Records -> incoming changes, consents -> records.
use super::*;
pub fn wanted_fields(_m: &Mapping) -> Vec<FieldRef> {
    todo!()
}
pub fn to_incoming(_m: &Mapping, _record: &Record, _phones: &PhoneParser, _out: &mut Vec<Incoming>) -> Result<(), RecordError> {
    todo!()
}
pub fn groups_by_number(_m: &Mapping) -> bool {
    todo!()
}
pub fn out_columns(_m: &Mapping) -> Vec<FieldRef> {
    todo!()
}
pub fn to_out_record(_m: &Mapping, _consents: &[Consent]) -> OutRecord {
    todo!()
}
pub fn reject_record(_m: &Mapping, _record: &Record) -> OutRecord {
    todo!()
}
