// mimalloc: every request allocates and frees buffers on tokio's worker
// threads and the journal's writer thread; glibc's malloc took 8-9% of the
// hub's CPU under ingest load, consolidating and unlinking chunks
// (BENCHMARKS.md, "HTTP ingest path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    govhub::cli::main()
}
