//! The mapping file's shape and its checks.
use super::*;
#[derive(Debug, Clone)]
pub struct MappingSpec {
    pub format: FormatSpec,
}
pub fn load(_name_or_path: &str, _mappings_dir: &Path) -> Result<Mapping, MappingErrors> {
    todo!()
}
pub fn from_toml(_name: &str, _file: &Path, _text: &str) -> Result<Mapping, MappingErrors> {
    todo!()
}
