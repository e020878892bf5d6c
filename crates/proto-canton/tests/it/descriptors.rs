//! Renders what protox compiled in the appendix's notation, so the two can be compared as text.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use std::collections::BTreeMap;

pub struct Compiled {
    /// Message full name → fields as `name = N : [rep |opt ]type[ (oneof x)]`.
    pub messages: BTreeMap<String, Vec<String>>,
    /// Enum full name → values as `NAME=N`.
    pub enums: BTreeMap<String, Vec<String>>,
    /// Every `/package.Service/Method` with its streaming shape.
    pub methods: Vec<Method>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Method {
    pub path: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

pub fn compiled(encoded: &[u8]) -> Compiled {
    let set = FileDescriptorSet::decode(encoded).expect("descriptor set decodes");
    let mut compiled = Compiled {
        messages: BTreeMap::new(),
        enums: BTreeMap::new(),
        methods: Vec::new(),
    };
    for file in &set.file {
        let package = file.package();
        if package.starts_with("google.") {
            continue;
        }
        for message in &file.message_type {
            collect(package, message, &mut compiled);
        }
        for enumeration in &file.enum_type {
            compiled.enums.insert(
                format!("{package}.{}", enumeration.name()),
                enum_values(enumeration),
            );
        }
        for service in &file.service {
            for method in &service.method {
                compiled.methods.push(Method {
                    path: format!("/{package}.{}/{}", service.name(), method.name()),
                    client_streaming: method.client_streaming(),
                    server_streaming: method.server_streaming(),
                });
            }
        }
    }
    compiled
}

fn enum_values(enumeration: &prost_types::EnumDescriptorProto) -> Vec<String> {
    enumeration
        .value
        .iter()
        .map(|value| format!("{}={}", value.name(), value.number()))
        .collect()
}

fn collect(scope: &str, message: &DescriptorProto, compiled: &mut Compiled) {
    let full_name = format!("{scope}.{}", message.name());
    let map_entries: BTreeMap<String, &DescriptorProto> = message
        .nested_type
        .iter()
        .filter(|nested| nested.options.as_ref().is_some_and(|o| o.map_entry()))
        .map(|nested| (format!(".{full_name}.{}", nested.name()), nested))
        .collect();
    let fields = message
        .field
        .iter()
        .map(|field| {
            let type_text = match map_entries.get(field.type_name()) {
                Some(entry) => format!(
                    "map<{}, {}>",
                    type_name(&entry.field[0]),
                    type_name(&entry.field[1])
                ),
                None => type_name(field),
            };
            let prefix = if map_entries.contains_key(field.type_name()) {
                ""
            } else if field.label() == Label::Repeated {
                "rep "
            } else if field.proto3_optional() {
                "opt "
            } else {
                ""
            };
            let oneof = match field.oneof_index {
                Some(index) if !field.proto3_optional() => {
                    format!(" (oneof {})", message.oneof_decl[index as usize].name())
                }
                _ => String::new(),
            };
            format!(
                "{} = {} : {prefix}{type_text}{oneof}",
                field.name(),
                field.number()
            )
        })
        .collect();
    compiled.messages.insert(full_name.clone(), fields);
    for nested in &message.nested_type {
        if !nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            collect(&full_name, nested, compiled);
        }
    }
    for enumeration in &message.enum_type {
        compiled.enums.insert(
            format!("{full_name}.{}", enumeration.name()),
            enum_values(enumeration),
        );
    }
}

fn type_name(field: &prost_types::FieldDescriptorProto) -> String {
    let scalar = match field.r#type() {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Message | Type::Enum | Type::Group => {
            return field.type_name().trim_start_matches('.').to_owned();
        }
    };
    scalar.to_owned()
}
