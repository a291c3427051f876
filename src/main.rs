//! The `dialogd` binary: the command line is `cli`'s.

fn main() -> std::process::ExitCode {
    dialogd::cli::run()
}
