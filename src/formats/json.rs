//! JSON records.
use super::*;
pub struct JsonReader;
impl JsonReader {
    pub fn new(_spec: &FormatSpec, _wanted: &[FieldRef], _input: Box<dyn Read + Send>, _file: &str) -> Result<Self, FormatError> {
        todo!()
    }
}
impl RecordReader for JsonReader {
    fn next_record(&mut self) -> Option<Result<Record, FormatError>> {
        todo!()
    }
}
pub struct JsonWriter<'w>(std::marker::PhantomData<&'w ()>);
impl<'w> JsonWriter<'w> {
    pub fn new(_spec: &FormatSpec, _out: Box<dyn Write + 'w>) -> Result<Self, FormatError> {
        todo!()
    }
}
impl RecordWriter for JsonWriter<'_> {
    fn write(&mut self, _record: &OutRecord) -> Result<(), FormatError> {
        todo!()
    }
    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        todo!()
    }
}
pub struct NdjsonReader;
impl NdjsonReader {
    pub fn new(_spec: &FormatSpec, _wanted: &[FieldRef], _input: Box<dyn Read + Send>, _file: &str) -> Result<Self, FormatError> {
        todo!()
    }
}
impl RecordReader for NdjsonReader {
    fn next_record(&mut self) -> Option<Result<Record, FormatError>> {
        todo!()
    }
}
pub struct NdjsonWriter<'w>(std::marker::PhantomData<&'w ()>);
impl<'w> NdjsonWriter<'w> {
    pub fn new(_spec: &FormatSpec, _out: Box<dyn Write + 'w>) -> Result<Self, FormatError> {
        todo!()
    }
}
impl RecordWriter for NdjsonWriter<'_> {
    fn write(&mut self, _record: &OutRecord) -> Result<(), FormatError> {
        todo!()
    }
    fn finish(self: Box<Self>) -> Result<(), FormatError> {
        todo!()
    }
}
