//! Compiles `proto/profile.proto` with a pure-Rust protobuf compiler, so that a bare
//! machine with no `protoc` can build the crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/profile.proto");
    // The release image's linker reads these (scripts/link-ordered): a new list has to
    // reach the binary, and cargo cannot see files only the linker reads.
    println!("cargo:rerun-if-changed=scripts/link-order.txt");
    println!("cargo:rerun-if-changed=scripts/link-ordered");
    let descriptors = protox::compile(["proto/profile.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
