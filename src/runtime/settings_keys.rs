//! The keys a settings type reads, taken from the type itself: its
//! `Deserialize` impl is run against a deserializer that records what it is
//! asked for (the `fields` serde passes to `deserialize_struct`, the kind of
//! each value, the variants of an enum) and answers with placeholder values.
//! No hand-kept list can fall behind the types: the configuration reference's
//! test (`tests/config_reference.rs`) compares `docs/configuration.md` with
//! what this finds.
//!
//! Maps (`[keris.partners.<name>]`) are entered with the one key `<name>`,
//! unless the caller names the keys to offer at that path: a struct with a
//! `#[serde(flatten)]` field deserializes as a map and does not tell its
//! field names, so its caller supplies them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};

/// What kind of value a key takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer,
    Number,
    Text,
    List,
    /// One of these names (a unit enum).
    Choice(&'static [&'static str]),
    /// A nested table (a struct or a map of named entries).
    Table,
    /// Anything: the type reads the value untyped (an untagged enum, a
    /// flattened section), so only its presence is known.
    Any,
}

/// The placeholder key under which a map's entries are described.
pub const MAP_ENTRY: &str = "<name>";

/// Every key `T` reads, dotted from its root (`smtp.security`), with its kind.
pub fn keys_of<T: DeserializeOwned>() -> BTreeMap<String, Kind> {
    keys_with::<T>(&|_| None)
}

/// Like [`keys_of`], offering `map_keys(path)` as the keys of the map at
/// `path` when it returns some.
pub fn keys_with<T: DeserializeOwned>(
    map_keys: &dyn Fn(&str) -> Option<Vec<String>>,
) -> BTreeMap<String, Kind> {
    let mut keys = BTreeMap::new();
    let recorder = Recorder {
        path: String::new(),
        keys: &mut keys,
        map_keys,
    };
    // A type that refuses a placeholder still told its fields before it did.
    let _ = T::deserialize(recorder);
    keys
}

/// A text placeholder every string-like type accepts: plain text, a path, a
/// secret, and a UUID.
const TEXT_SAMPLE: &str = "00000000-0000-0000-0000-000000000000";

struct Recorder<'a> {
    path: String,
    keys: &'a mut BTreeMap<String, Kind>,
    map_keys: &'a dyn Fn(&str) -> Option<Vec<String>>,
}

impl Recorder<'_> {
    fn record(&mut self, kind: Kind) {
        if !self.path.is_empty() {
            self.keys.insert(self.path.clone(), kind);
        }
    }

    fn child(&mut self, key: &str) -> Recorder<'_> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Recorder {
            path,
            keys: self.keys,
            map_keys: self.map_keys,
        }
    }

    /// Visits a table whose entries are `keys`, each value recorded under it.
    fn visit_table<'de, V: Visitor<'de>>(
        mut self,
        keys: Vec<String>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.record(Kind::Table);
        visitor.visit_map(Entries {
            table: self,
            keys: keys.into_iter(),
            current: String::new(),
        })
    }
}

struct Entries<'a> {
    table: Recorder<'a>,
    keys: std::vec::IntoIter<String>,
    current: String,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(key) = self.keys.next() else {
            return Ok(None);
        };
        self.current = key;
        let key: StrDeserializer<'_, Error> = self.current.as_str().into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let key = self.current.clone();
        seed.deserialize(self.table.child(&key))
    }
}

/// The first variant of an enum, as a unit variant.
struct FirstVariant<'a> {
    recorder: Recorder<'a>,
    variant: &'static str,
}

impl<'de, 'a> de::EnumAccess<'de> for FirstVariant<'a> {
    type Error = Error;
    type Variant = Recorder<'a>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let name: StrDeserializer<'_, Error> = self.variant.into_deserializer();
        Ok((seed.deserialize(name)?, self.recorder))
    }
}

impl<'de> de::VariantAccess<'de> for Recorder<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(de::value::SeqDeserializer::<_, Error>::new(
            std::iter::empty::<u8>(),
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let keys = fields.iter().map(|f| f.to_string()).collect();
        self.visit_table(keys, visitor)
    }
}

macro_rules! scalar {
    ($($method:ident => $kind:expr, $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
            self.record($kind);
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Error;

    scalar! {
        deserialize_bool => Kind::Bool, visit_bool(false);
        deserialize_i8 => Kind::Integer, visit_i64(1);
        deserialize_i16 => Kind::Integer, visit_i64(1);
        deserialize_i32 => Kind::Integer, visit_i64(1);
        deserialize_i64 => Kind::Integer, visit_i64(1);
        deserialize_u8 => Kind::Integer, visit_u64(1);
        deserialize_u16 => Kind::Integer, visit_u64(1);
        deserialize_u32 => Kind::Integer, visit_u64(1);
        deserialize_u64 => Kind::Integer, visit_u64(1);
        deserialize_f32 => Kind::Number, visit_f64(1.0);
        deserialize_f64 => Kind::Number, visit_f64(1.0);
        deserialize_char => Kind::Text, visit_char('x');
        deserialize_str => Kind::Text, visit_str(TEXT_SAMPLE);
        deserialize_string => Kind::Text, visit_str(TEXT_SAMPLE);
        deserialize_bytes => Kind::Any, visit_bytes(&[]);
        deserialize_byte_buf => Kind::Any, visit_bytes(&[]);
        deserialize_unit => Kind::Any, visit_unit();
        deserialize_ignored_any => Kind::Any, visit_unit();
    }

    /// Untyped: an empty list suits the untagged forms used here (a list of
    /// numbers or one number or text).
    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
        self.record(Kind::Any);
        visitor.visit_seq(de::value::SeqDeserializer::<_, Error>::new(
            std::iter::empty::<u8>(),
        ))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
        self.record(Kind::List);
        visitor.visit_seq(de::value::SeqDeserializer::<_, Error>::new(
            std::iter::empty::<u8>(),
        ))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let keys = (self.map_keys)(&self.path).unwrap_or_else(|| vec![MAP_ENTRY.to_string()]);
        self.visit_table(keys, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // Recorded before any value is visited: a field whose value refuses
        // its placeholder is still listed.
        for field in fields {
            let path = self.child(field).path;
            self.keys.entry(path).or_insert(Kind::Any);
        }
        let keys = fields.iter().map(|f| f.to_string()).collect();
        self.visit_table(keys, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.record(Kind::Choice(variants));
        let variant = variants.first().copied().unwrap_or_default();
        visitor.visit_enum(FirstVariant {
            recorder: self,
            variant,
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Bool => f.write_str("boolean"),
            Kind::Integer => f.write_str("integer"),
            Kind::Number => f.write_str("number"),
            Kind::Text => f.write_str("string"),
            Kind::List => f.write_str("list"),
            Kind::Choice(names) => write!(f, "one of {}", names.join(", ")),
            Kind::Table => f.write_str("table"),
            Kind::Any => f.write_str("any"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        mode: Mode,
        id: uuid::Uuid,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        count: u32,
        ratio: Option<f64>,
        names: Vec<String>,
        inner: Inner,
        by_name: BTreeMap<String, Inner>,
    }

    #[test]
    fn nested_tables_options_enums_and_maps_are_found_with_their_kinds() {
        let keys = keys_of::<Outer>();
        let expect = [
            ("count", Kind::Integer),
            ("ratio", Kind::Number),
            ("names", Kind::List),
            ("inner", Kind::Table),
            ("inner.mode", Kind::Choice(&["fast", "slow"])),
            ("inner.id", Kind::Text),
            ("by_name", Kind::Table),
            ("by_name.<name>", Kind::Table),
            ("by_name.<name>.mode", Kind::Choice(&["fast", "slow"])),
            ("by_name.<name>.id", Kind::Text),
        ];
        let expect: BTreeMap<String, Kind> = expect
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(keys, expect);
    }
}
