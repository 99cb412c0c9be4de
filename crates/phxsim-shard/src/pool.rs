//! Topics over shards. Phoenix routes a topic to shard `:erlang.phash2(topic, pool_size)`; phash2
//! is an Erlang-internal hash of the term's external format, so this crate uses its own stable
//! hash instead: 64-bit FNV-1a over the topic's UTF-8 bytes, modulo the pool size. It depends on
//! nothing but the bytes (no per-process seed, no platform word size), so every node, every run
//! and every build agree on a topic's shard. A phxsim node therefore cannot share a pool with a
//! real Phoenix node of `pool_size > 1`; with `pool_size` 1 both put everything on shard 0.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard index of `topic` in a pool of `pool_size` shards (`pool_size` ≥ 1; 0 is treated
/// as 1 so that no input can make this divide by zero).
pub fn shard_for_topic(topic: &str, pool_size: u32) -> u32 {
    let n = u64::from(pool_size.max(1));
    // The remainder is below `pool_size`, which is a u32.
    u32::try_from(fnv1a(topic.as_bytes()) % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        // Pinned: changing the hash would move every topic of a running cluster.
        assert_eq!(shard_for_topic("lobby", 1), 0);
        assert_eq!(shard_for_topic("lobby", 8), (fnv1a(b"lobby") % 8) as u32);
        for n in [1, 2, 8, 512] {
            for i in 0..200 {
                assert!(shard_for_topic(&format!("topic:{i}"), n) < n);
            }
        }
        assert_eq!(shard_for_topic("x", 0), 0);
    }

    #[test]
    fn topics_spread_over_the_pool() {
        let mut counts = [0u32; 8];
        for i in 0..800 {
            counts[shard_for_topic(&format!("room:{i}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    }
}
