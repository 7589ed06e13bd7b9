//! Helper for `benches/load.sh`: mints access tokens with the crate's own [`JwtKeys`]
//! (so they are exactly what the server accepts) and prints an argon2id hash.
//!
//! ```text
//! JWT_SECRET=... cargo run --release --example bench_tokens -- tokens <orgs>
//!     one line per org i in 1..=orgs: "<org_id> <token>" for the seeded user/session of i
//! cargo run --release --example bench_tokens -- hash <password>
//!     a PHC argon2id hash with the server's parameters
//! cargo run --release --example bench_tokens -- keys <orgs>
//!     one line per org i: "<org_id> <API key>", a fresh random key each (load.sh
//!     stores their SHA-256 as the keys of the seeded orgs)
//! PALISADE_MASTER_KEY=... cargo run --release --example bench_tokens -- proof-key
//!     the session-proof key (hex): the seed stores SHA-256(HMAC(key, session id)) and
//!     pgbench computes the same HMAC (pgcrypto) to prove each session, as the server does
//! cargo run --release --example bench_tokens -- retrieve-sql
//!     the assistant's retrieval statement as the server runs it
//!     (`palisade::assistant::RETRIEVE_SQL`), for load.sh to turn into a pgbench script,
//!     and on its last line the number of chunks a turn retrieves
//! ```
//!
//! Ids follow the seed's scheme (benches/seed.sql): entity prefix, then
//! `-0000-4000-8000-`, then the 12 decimal digits of 100000000000 + i.

use std::time::Duration;

use palisade::{
    auth::{jwt::JwtKeys, password::Passwords},
    config::{JwtKey, JwtSettings},
};
use uuid::Uuid;

fn bench_id(prefix: &str, i: u64) -> Uuid {
    format!("{prefix}-0000-4000-8000-{}", 100_000_000_000 + i)
        .parse()
        .expect("a valid uuid")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("tokens") => {
            let orgs: u64 = args.get(1).map_or(Ok(10_000), |n| n.parse())?;
            let secret = std::env::var("JWT_SECRET")?;
            let keys = JwtKeys::new(&JwtSettings {
                signing: JwtKey {
                    kid: std::env::var("JWT_KEY_ID").unwrap_or_else(|_| "primary".into()),
                    secret: secret.into(),
                },
                previous: Vec::new(),
                issuer: "palisade".into(),
                audience: "palisade-api".into(),
                // Long enough for any bench run.
                access_ttl: Duration::from_secs(12 * 3600),
            });
            let mut out = String::with_capacity(orgs as usize * 320);
            for i in 1..=orgs {
                let token = keys.issue(bench_id("0000000b", i), bench_id("0000000c", i));
                out.push_str(&format!("{} {token}\n", bench_id("0000000a", i)));
            }
            print!("{out}");
            Ok(())
        }
        Some("keys") => {
            let orgs: u64 = args.get(1).map_or(Ok(10_000), |n| n.parse())?;
            let mut out = String::with_capacity(orgs as usize * 80);
            for i in 1..=orgs {
                let key = palisade::auth::api_key::ApiKeySecret::generate();
                out.push_str(&format!("{} {}\n", bench_id("0000000a", i), key.expose()));
            }
            print!("{out}");
            Ok(())
        }
        Some("hash") => {
            let password = args.get(1).cloned().unwrap_or_default();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let hash =
                rt.block_on(Passwords::new(1, Duration::from_secs(5)).hash(password.into()))?;
            println!("{hash}");
            Ok(())
        }
        Some("proof-key") => {
            let master = std::env::var("PALISADE_MASTER_KEY")?;
            let key =
                palisade::crypto::derive(&master.into(), palisade::crypto::Purpose::SessionProof);
            println!("{}", hex::encode(key));
            Ok(())
        }
        Some("retrieve-sql") => {
            println!("{}", palisade::assistant::RETRIEVE_SQL.trim());
            println!("{}", palisade::assistant::RETRIEVED_CHUNKS);
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: bench_tokens tokens <orgs> | keys <orgs> | hash <password> | proof-key | retrieve-sql"
        ),
    }
}
