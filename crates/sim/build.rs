//! Compiles the sim's own sequencer protocol (members ↔ sequencer), which is not part of
//! Canton's admin API and so does not live in `proto-canton`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = protox::compile(["canton_sim/sequencer/v1/sequencer.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
