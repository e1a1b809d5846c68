//! `csrd bench keygen`: what one key + CSR costs with the crates csrd uses.

use std::time::{Duration, Instant};

use crate::crypto::{build_csr, generate_key};
use crate::domain::{CreateCsr, KeyType, NamePolicy, OwnerKind};

fn sample_request(key_type: KeyType) -> CreateCsr {
    let body = serde_json::json!({
        "common_name": "bench.example.com", "country": "US", "state": "California",
        "locality": "San Francisco", "organization": "csrd bench",
        "sans": ["bench.example.com", "www.bench.example.com"], "key_type": key_type.as_str()
    });
    CreateCsr::parse(
        body.to_string().as_bytes(),
        OwnerKind::Zone,
        NamePolicy::Permissive,
    )
    .expect("valid sample request")
}

/// Runs each key type for `seconds` on `threads` threads and prints a Markdown table.
pub fn keygen(types: &[KeyType], seconds: f64, threads: usize) {
    println!("| key type | threads | keys | seconds | keys/s | mean ms/key (per thread) |");
    println!("|---|---|---|---|---|---|");
    for &kt in types {
        let request = sample_request(kt);
        let budget = Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let counts: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0u64;
                        while started.elapsed() < budget {
                            let key = generate_key(kt).expect("keygen");
                            std::hint::black_box(build_csr(&request, &key).expect("csr"));
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("bench thread"))
                .collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let total: u64 = counts.iter().sum();
        let per_sec = total as f64 / elapsed;
        let mean_ms = elapsed * 1000.0 * threads as f64 / total.max(1) as f64;
        println!(
            "| {} | {threads} | {total} | {elapsed:.1} | {per_sec:.1} | {mean_ms:.2} |",
            kt.as_str()
        );
    }
}
