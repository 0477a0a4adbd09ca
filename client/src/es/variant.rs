//! The name of the enum variant a value serializes as: a serde
//! `Serializer` that accepts only enum variants and records their name, so
//! that [`super::SerdeEvent`] takes the event type from the type itself
//! and refuses anything that is not an externally tagged variant (a struct
//! or a string would otherwise pass for one by the shape of its JSON).

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Why a value is not a variant.
#[derive(Debug)]
pub(crate) struct NotAVariant(String);

impl std::fmt::Display for NotAVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAVariant {}

impl ser::Error for NotAVariant {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        NotAVariant(msg.to_string())
    }
}

/// The variant name `value` serializes as.
pub(crate) fn variant_name<T: Serialize + ?Sized>(value: &T) -> Result<&'static str, NotAVariant> {
    value.serialize(VariantName)
}

struct VariantName;

/// Accepts the fields of a tuple or struct variant and ignores them.
struct Fields(&'static str);

fn not_a_variant<T>(what: &str) -> Result<T, NotAVariant> {
    Err(NotAVariant(format!(
        "{what} is not an enum variant: implement Event, not SerdeEvent, for this type"
    )))
}

impl ser::SerializeTupleVariant for Fields {
    type Ok = &'static str;
    type Error = NotAVariant;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotAVariant> {
        Ok(())
    }
    fn end(self) -> Result<&'static str, NotAVariant> {
        Ok(self.0)
    }
}

impl ser::SerializeStructVariant for Fields {
    type Ok = &'static str;
    type Error = NotAVariant;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotAVariant> {
        Ok(())
    }
    fn end(self) -> Result<&'static str, NotAVariant> {
        Ok(self.0)
    }
}

macro_rules! refuse {
    ($($name:ident($($arg:ty),*);)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<&'static str, NotAVariant> {
            not_a_variant(stringify!($name))
        })*
    };
}

impl ser::Serializer for VariantName {
    type Ok = &'static str;
    type Error = NotAVariant;
    type SerializeSeq = Impossible<&'static str, NotAVariant>;
    type SerializeTuple = Impossible<&'static str, NotAVariant>;
    type SerializeTupleStruct = Impossible<&'static str, NotAVariant>;
    type SerializeTupleVariant = Fields;
    type SerializeMap = Impossible<&'static str, NotAVariant>;
    type SerializeStruct = Impossible<&'static str, NotAVariant>;
    type SerializeStructVariant = Fields;

    refuse! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<&'static str, NotAVariant> {
        not_a_variant("an option")
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<&'static str, NotAVariant> {
        Ok(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<&'static str, NotAVariant> {
        // A newtype around an enum is that enum.
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<&'static str, NotAVariant> {
        Ok(variant)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAVariant> {
        not_a_variant("a sequence")
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAVariant> {
        not_a_variant("a tuple")
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAVariant> {
        not_a_variant("a tuple struct")
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAVariant> {
        Ok(Fields(variant))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAVariant> {
        not_a_variant("a map (an internally or adjacently tagged enum?)")
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotAVariant> {
        not_a_variant("a struct (an internally tagged enum?)")
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAVariant> {
        Ok(Fields(variant))
    }
}
