//! The `dialogd` binary: the command line is `cli`'s.

/// mimalloc instead of glibc's malloc: allocation is on every request's
/// path (see the comment in Cargo.toml and BENCHMARKS.md (h)).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dialogd::cli::run()
}
