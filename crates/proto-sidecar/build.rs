//! Compiles our `.proto` files with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/canton_sidecar/v1/bus.proto",
        "proto/canton_sidecar/v1/coordinator.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    // Kept for the field-number golden test, which guards against renumbering.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("canton_sidecar_descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    // compile_fds does not emit these itself.
    println!("cargo:rerun-if-changed=proto");
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}
