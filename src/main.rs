// mimalloc: the request path allocates many small buffers (headers, JSON, SSE events) across
// threads; glibc malloc showed up at the top of the c=64 profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(tollgate::cli::main());
}
