fn main() -> std::process::ExitCode {
    hab_bootstrap::install_crypto_provider();
    let cli = hab_bootstrap::cli::parse();
    hab_bootstrap::cli::run(cli)
}
