//! Guards the evolution rules: a field may be added, never renumbered, retyped or dropped
//! without being reserved. The golden file lists `Message.field = number type`; adding a field
//! means adding its line, and any other difference fails.

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

fn render(prefix: &str, message: &DescriptorProto, lines: &mut Vec<String>) {
    let name = format!("{prefix}{}", message.name());
    for field in &message.field {
        let type_name = if field.type_name().is_empty() {
            format!("{:?}", field.r#type())
        } else {
            field
                .type_name()
                .trim_start_matches(".canton_sidecar.v1.")
                .to_owned()
        };
        lines.push(format!(
            "{name}.{} = {} {:?} {type_name}",
            field.name(),
            field.number(),
            field.label()
        ));
    }
    for range in &message.reserved_range {
        lines.push(format!(
            "{name} reserved {}..{}",
            range.start(),
            range.end()
        ));
    }
    for nested in &message.nested_type {
        render(&format!("{name}."), nested, lines);
    }
}

fn current_lines() -> Vec<String> {
    let set = FileDescriptorSet::decode(proto_sidecar::FILE_DESCRIPTOR_SET).unwrap();
    let mut lines = Vec::new();
    for file in set
        .file
        .iter()
        .filter(|f| f.package() == "canton_sidecar.v1")
    {
        for message in &file.message_type {
            render("", message, &mut lines);
        }
        for enumeration in &file.enum_type {
            for value in &enumeration.value {
                lines.push(format!(
                    "{}::{} = {}",
                    enumeration.name(),
                    value.name(),
                    value.number()
                ));
            }
        }
    }
    lines.sort();
    lines
}

#[test]
fn field_numbers_match_the_golden_file() {
    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/field_numbers.golden");
    let current = current_lines();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path, current.join("\n") + "\n").unwrap();
    }
    let golden_text = std::fs::read_to_string(golden_path).unwrap();
    let golden: Vec<&str> = golden_text.lines().filter(|l| !l.is_empty()).collect();
    let missing: Vec<&&str> = golden
        .iter()
        .filter(|line| !current.iter().any(|c| c == *line))
        .collect();
    let added: Vec<&String> = current
        .iter()
        .filter(|line| !golden.contains(&line.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "fields renumbered, retyped or removed without `reserved` (never allowed): {missing:#?}\n\
         added: {added:#?}"
    );
    assert!(
        added.is_empty(),
        "new fields; if they take fresh numbers, add these lines to {golden_path} \
         (or rerun with UPDATE_GOLDEN=1): {added:#?}"
    );
}
