//! What a consent is for: recording a call, or messaging on WhatsApp outside the 24-hour window.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    CallRecording,
    Whatsapp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown usage {0:?}: expected call_recording or whatsapp")]
pub struct UnknownUsage(pub String);

impl Usage {
    pub const ALL: [Usage; 2] = [Usage::CallRecording, Usage::Whatsapp];

    pub fn as_str(self) -> &'static str {
        match self {
            Usage::CallRecording => "call_recording",
            Usage::Whatsapp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownUsage> {
        match s.trim().to_ascii_lowercase().as_str() {
            "call_recording" => Ok(Usage::CallRecording),
            "whatsapp" => Ok(Usage::Whatsapp),
            _ => Err(UnknownUsage(s.to_string())),
        }
    }

    /// One byte for store keys.
    pub fn code(self) -> u8 {
        match self {
            Usage::CallRecording => 0,
            Usage::Whatsapp => 1,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Usage::CallRecording),
            1 => Some(Usage::Whatsapp),
            _ => None,
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Usage {
    type Err = UnknownUsage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Usage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Usage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Usage::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI description: one of the usages' names.
impl utoipa::PartialSchema for Usage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Usage::ALL.iter().map(|u| u.to_string())))
            .into()
    }
}

impl utoipa::ToSchema for Usage {}
