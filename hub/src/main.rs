fn main() -> std::process::ExitCode {
    govhub::cli::main()
}
