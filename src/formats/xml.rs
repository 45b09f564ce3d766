//! XML records.
use super::*;
pub struct XmlReader;
impl XmlReader {
    pub fn new(_spec: &FormatSpec, _wanted: &[FieldRef], _input: Box<dyn Read + Send>, _file: &str) -> Result<Self, FormatError> {
        todo!()
    }
}
impl RecordReader for XmlReader {
    fn next_record(&mut self) -> Option<Result<Record, FormatError>> {
        todo!()
    }
}
pub struct XmlWriter<'w>(std::marker::PhantomData<&'w ()>);
impl<'w> XmlWriter<'w> {
    pub fn new(_spec: &FormatSpec, _out: Box<dyn Write + 'w>) -> Result<Self, FormatError> {
        todo!()
    }
}
impl RecordWriter for XmlWriter<'_> {
    fn write(&mut self, _record: &OutRecord) -> Result<(), FormatError> {
        todo!()
    }
    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        todo!()
    }
}
