//! Compiles our .proto files with protox (no system protoc) into two module trees: the 3.4
//! baseline (appendix-derived files plus the supplement) and the 3.5 deltas. Each tree's
//! FileDescriptorSet is kept beside the code so tests can compare field numbers with the facts.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds prints no rerun-if-changed lines itself.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");

    let mut baseline_files = proto_files(Path::new("proto/3.4"))?;
    baseline_files.extend(proto_files(Path::new("proto/supplement"))?);
    compile(
        &baseline_files,
        &["proto/3.4", "proto/supplement"],
        &out_dir.join("line_3_4"),
    )?;

    let mut line_3_5_files = proto_files(Path::new("proto/3.5"))?;
    // Status services unchanged in 3.5, compiled again so that their NotInitialized carries the
    // 3.5 `version` field.
    for unchanged in [
        "proto/3.4/com/digitalasset/canton/admin/participant/v30/participant_status_service.proto",
        "proto/3.4/com/digitalasset/canton/admin/sequencer/v30/sequencer_status_service.proto",
        "proto/3.4/com/digitalasset/canton/admin/mediator/v30/mediator_status_service.proto",
    ] {
        line_3_5_files.push(PathBuf::from(unchanged));
    }
    compile(
        &line_3_5_files,
        &["proto/3.5", "proto/3.4"],
        &out_dir.join("line_3_5"),
    )?;
    Ok(())
}

fn compile(
    files: &[PathBuf],
    includes: &[&str],
    out_dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out_dir)?;
    let descriptors = protox::compile(files, includes)?;
    std::fs::write(
        out_dir.join("descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Unimplemented by default, so a test server or the sim implements only what it serves.
        .generate_default_stubs(true)
        .out_dir(out_dir)
        .include_file("mod.rs")
        .compile_fds(descriptors)?;
    Ok(())
}

fn proto_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                found.push(path);
            }
        }
    }
    // Sorted so the generated code does not depend on directory order.
    found.sort();
    Ok(found)
}
