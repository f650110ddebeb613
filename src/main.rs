//! The `cryptodl` command-line tool; all logic lives in [`cryptodl::cli`].

fn main() -> std::process::ExitCode {
    cryptodl::cli::main()
}
