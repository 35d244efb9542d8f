//! The `tidesync` command; see the `tidesync_cli` library and the crate README.

fn main() -> std::process::ExitCode {
    tidesync_cli::main()
}
